from diffplat.cli import main

raise SystemExit(main())
