"""`python -m knative.plan`: see knative/plan/cli.py."""

import sys

from knative.plan.cli import main

sys.exit(main())
