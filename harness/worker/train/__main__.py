"""``python -m harness.worker.train RUN_DIR``: the command line the driver's launchers build."""

import sys

from harness.worker.train.run import main

sys.exit(main())
