"""The pre-training paradox with a ViT (the paper's Appendix D.2): butterfly families fine-tuning ViT-B/16 on
CIFAR-100 from ImageNet-21k weights and from the same weights after extra ImageNet-1k pre-training.

    # the published checkpoints (Hugging Face safetensors; Google's .npz files load as well)
    huggingface-cli download google/vit-base-patch16-224-in21k model.safetensors --local-dir weights/vit-b16-in21k
    huggingface-cli download google/vit-base-patch16-224 model.safetensors --local-dir weights/vit-b16-in21k-in1k
    # one family
    python -m butterfly_jax.main --config=configs/vit_finetune_c100.py --workdir=runs/vit_c100_one
    # the sweep: 2 checkpoints x perturbation at step 0 / 1 / 375 / 750 x 3 seeds = 24 runs, each one family
    # (the twin and sigma = 1e-5, 1e-3, 1e-2, 1e-1; batch perturbations; norms and biases not perturbed)
    python -m butterfly_jax.launch --config=configs/vit_finetune_c100.py --runs=runs/vit_c100
    python -m butterfly_jax.report --runs=runs/vit_c100

ViT-B/16 (86M parameters) with a fresh 100-class head initialised as torch's ``nn.Linear``; 32x32 CIFAR
images are resized to 224x224 inside the model (``model.kwargs.image_size``), the resolution of the
checkpoints' position embeddings. The authors' recipe (``train-cifar100-from-imagenet-vit.sh``,
``vit-all-jobs.sh``): AdamW at 2e-4 without weight decay on a one-cycle schedule with 10% warm-up, batch 32,
5 epochs, rotation by up to 10 degrees, translation by 16 of 224 pixels (2 of 32 here, before the resize) and
random erasing of up to 16/224 of the image, flips; sigma measured against a 0.02 init standard deviation for
every weight (their ViT ``get_init_stds``, ``perturb.init_std``). The family's members run one after another
(``members.strategy=sequential``): six ViT-B/16 under ``vmap`` would need six times the activation memory.
Barriers on 5,000 train and 5,000 test images.

GPU cost (estimated, not measured): XLA counts 35.3 GFLOP per image forward and 105.5 GFLOP per training
image at 224x224. One run (6 networks x 5 epochs, then 102 evaluated networks on 10k images) is about
2e17 FLOP: about 35 minutes at an assumed 100 TFLOP/s sustained on one H100, so about 14 GPU-hours for the
sweep; ``--set train.compute_dtype=bfloat16`` should roughly halve it. The same study sized for 2 CPU
cores: ``configs/fashion_mnist_pretrain.py`` and ``configs/fashion_mnist_finetune.py`` (REPRODUCTION.md).
"""

from butterfly_jax.config import default_config

WEIGHTS = ("weights/vit-b16-in21k/model.safetensors",         # ImageNet-21k
           "weights/vit-b16-in21k-in1k/model.safetensors")    # ImageNet-21k, then ImageNet-1k


VIT_SCALES = (0.0, 1e-5, 1e-3, 1e-2, 1e-1)  # the twin and the authors' sigmas


def get_config():
  c = default_config()
  c.data.name = "cifar100"
  c.data.augment.flip = True
  c.data.augment.rotate = 10.0
  c.data.augment.translate = 2       # 16 of 224 pixels, at 32 before the resize
  c.data.augment.erase = 16 / 224
  c.model.name = "vit_b16"
  c.model.kwargs.image_size = 224
  c.init.checkpoint = WEIGHTS[0]
  c.train.batch_size = 32
  c.train.steps = "5ep"
  c.optim.name = "adamw"
  c.optim.lr = 2e-4
  c.optim.weight_decay = 0.0
  c.schedule.name = "onecycle"
  c.schedule.warmup = "0.5ep"        # 10% of 5 epochs
  c.perturb.kind = "batch"
  c.perturb.time = "0"
  c.perturb.scales = VIT_SCALES
  c.perturb.init_std = 0.02
  c.members.strategy = "sequential"
  c.eval.num_examples = 5000
  c.eval.batch_size = 250
  c.log.every_steps = 390
  c.checkpoint.every_steps = "1562"
  return c


def sweep(add):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"init.checkpoint": WEIGHTS, "perturb.time": ("0", "1", "375", "750"), "seed": (0, 1, 2)})
