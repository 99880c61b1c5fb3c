import sys

from pack_agent.cli import main

sys.exit(main())
