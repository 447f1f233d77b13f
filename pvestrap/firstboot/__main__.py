"""`python3 -m pvestrap.firstboot`: the first-boot flow (what the systemd unit's script runs)."""

import sys

from pvestrap.firstboot.entry import main

sys.exit(main())
