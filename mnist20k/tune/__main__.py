"""`python -m mnist20k.tune SPEC INDEX`: one tune worker (worker.py). An entry point of its own, so that the
package, which imports worker.py, is not run as a script after it was imported."""

import sys

from mnist20k.tune.worker import main

if __name__ == "__main__":  # imported (as the layout test imports every module), it runs nothing
    sys.exit(main(sys.argv[1:]))
