from llcuda_tui.cli import main

raise SystemExit(main())
