"""``python -m batch_stats.worker``: the container's command."""

import sys

from batch_stats.worker.app import main

sys.exit(main())
