"""``python -m prodrec`` runs the command line (also under ``torchrun -m prodrec``)."""
from prodrec.cli import main

raise SystemExit(main())
