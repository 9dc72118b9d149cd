from prodio.cli import main

raise SystemExit(main())
