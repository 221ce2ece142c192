"""``python -m verify.bench``: the benchmark command (also how its subprocess runs start)."""

import sys

from verify.bench.command import main

sys.exit(main())
