"""``python -m simam_paddle.train`` as a script file, for launchers that need a path:

    python -m paddle.distributed.launch --nproc_per_node 2 scripts/train.py --config configs/alexnet_simam.yaml
"""

import sys

from simam_paddle.train import main

if __name__ == "__main__":
    sys.exit(main())
