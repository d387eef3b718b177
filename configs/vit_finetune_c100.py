"""The pre-training paradox with a ViT (the paper's Appendix D.2): butterfly families fine-tuning ViT-B/16 on
CIFAR-100 from ImageNet-21k weights and from the same weights after extra ImageNet-1k pre-training.

    # the published checkpoints (Hugging Face safetensors; Google's .npz files load as well)
    huggingface-cli download google/vit-base-patch16-224-in21k model.safetensors --local-dir weights/vit-b16-in21k
    huggingface-cli download google/vit-base-patch16-224 model.safetensors --local-dir weights/vit-b16-in21k-in1k
    # one family
    python -m butterfly_jax.main --config=configs/vit_finetune_c100.py --workdir=runs/vit_c100_one
    # the sweep: 2 checkpoints x perturbation at 0 / 1 epoch x 3 seeds = 12 runs, each one family (the twin
    # and sigma = 1e-4, 1e-3, 1e-2, 1e-1; batch perturbations; norms and biases not perturbed)
    python -m launch --config=configs/vit_finetune_c100.py --runs=runs/vit_c100
    python -m butterfly_jax.report --runs=runs/vit_c100

ViT-B/16 (86M parameters) with a fresh 100-class head; 32x32 CIFAR images are resized to 224x224 inside the
model (``model.kwargs.image_size``), the resolution of the checkpoints' position embeddings. SGD momentum
0.9 with gradients clipped to global norm 1 (the ViT paper's fine-tuning recipe), batch 128, cosine learning
rate to 0.01 after a 0.5-epoch warm-up, 10 epochs, flips and translation by 4 pixels. The family's members
run one after another (``members.strategy=sequential``): six ViT-B/16 under ``vmap`` would need six times
the activation memory. Barriers on 5,000 train and 5,000 test images.

GPU cost (estimated, not measured): XLA counts 35.3 GFLOP per image forward and 105.5 GFLOP per training
image at 224x224. One run (6 networks x 10 epochs, then 102 evaluated networks on 10k images) is about
3.5e17 FLOP: about an hour at an assumed 100 TFLOP/s sustained on one H100, so about 12 GPU-hours for the
sweep; ``--set train.compute_dtype=bfloat16`` should roughly halve it. The same study sized for 2 CPU
cores: ``configs/fashion_mnist_pretrain.py`` and ``configs/fashion_mnist_finetune.py`` (REPRODUCTION.md).
"""

from butterfly_jax.configs_embedded import FINETUNE_SCALES, finetune_sweep
from butterfly_jax.config import default_config

WEIGHTS = ("weights/vit-b16-in21k/model.safetensors",         # ImageNet-21k
           "weights/vit-b16-in21k-in1k/model.safetensors")    # ImageNet-21k, then ImageNet-1k


def get_config():
  c = default_config()
  c.data.name = "cifar100"
  c.data.augment.flip = True
  c.data.augment.translate = 4
  c.model.name = "vit_b16"
  c.model.kwargs.image_size = 224
  c.init.checkpoint = WEIGHTS[0]
  c.train.batch_size = 128
  c.train.steps = "10ep"
  c.optim.name = "sgd"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.clip_norm = 1.0
  c.schedule.name = "cosine"
  c.schedule.warmup = "0.5ep"
  c.perturb.kind = "batch"
  c.perturb.time = "0"
  c.perturb.scales = FINETUNE_SCALES
  c.members.strategy = "sequential"
  c.eval.num_examples = 5000
  c.eval.batch_size = 250
  c.log.every_steps = 390
  return c


def sweep(add):
  finetune_sweep(add, WEIGHTS, times=("0", "1ep"))
