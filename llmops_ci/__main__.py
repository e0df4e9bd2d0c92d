from llmops_ci.cli import main

raise SystemExit(main())
