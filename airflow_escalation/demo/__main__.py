import sys

from airflow_escalation.demo.run import main

sys.exit(main())
