from benchmarks.data.report import main

raise SystemExit(main())
