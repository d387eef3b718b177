"""Pre-training for the CPU fine-tuning study: Fashion-MNIST classes 0-4 (T-shirt, trouser, pullover, dress,
coat), MLP 512-512, 10 epochs, one network, with checkpoints kept along the way.

    python -m butterfly_jax.main --config=configs/fashion_mnist_pretrain.py --workdir=runs/fm_pretrain

Keeps child 0's weights at steps 0, 1ep, 2ep, 5ep, 10ep and 8 log-spaced steps (a dense early schedule);
``configs/fashion_mnist_finetune.py`` starts families from them. 16 s on 2 CPU cores (one MLP, 30,000
images, 2,340 steps; measured on 2026-11-25).
"""

from butterfly_jax.config import config_file

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)


def get_config():
  c = fashion_mnist.get_config()
  c.data.classes = (0, 1, 2, 3, 4)
  c.train.steps = "10ep"
  c.perturb.scales = ()     # no children: one network
  c.checkpoint.keep = ("0", "1ep", "2ep", "5ep", "10ep")
  c.checkpoint.keep_log = 8
  c.eval.num_examples = 5000
  c.log.every_steps = 117
  return c
