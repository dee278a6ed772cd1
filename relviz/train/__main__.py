from relviz.train.trainer import main

raise SystemExit(main())
