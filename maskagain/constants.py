"""Constants the data pipeline, the models and the exports share (torch-free)."""

# the ImageNet per-channel mean and standard deviation (RGB, pixels in [0, 1]) that VideoMAE
# and its teachers normalise clips with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
