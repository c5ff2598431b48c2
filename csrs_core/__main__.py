from csrs_core.cli import main

raise SystemExit(main())
