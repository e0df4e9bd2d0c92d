from llmops_ci.ci import main

raise SystemExit(main())
