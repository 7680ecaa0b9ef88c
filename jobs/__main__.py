import sys

from jobs import main
from kard_ray.config import ConfigError

try:
    main()
except ConfigError as exc:  # a bad config or a refused plan: the reasons, not a traceback
    sys.exit(f"error: {exc}")
