__version__ = '0.1.0'

# torch and the torchvision release built against it, declared together: a
# torchvision release requires one exact torch release, and a torchvision of
# another build (CUDA for a CPU torch) fails at import. ``tools/install.sh``
# installs exactly these (torchvision with ``--no-deps`` and the same build
# label as the installed torch, so that it can never replace torch) and its
# probe checks them. torchvision is optional: this project's configs name the
# ImageNet weights by URL, but stock mmdet configs initialise backbones from
# ``torchvision://resnet50`` (mmengine looks its URL up in torchvision's model
# table), so ``make install`` adds it where a build of torch's kind is found.
TORCH_VERSION = '2.13.0'
TORCHVISION_VERSION = '0.28.0'

# The faster-coco-eval releases the fast LVIS backend is tested with. The
# backend relies on private internals of faster-coco-eval (1.7.x lacks
# ``_nonempty_iou_pairs``, 1.6.0 lacks ``print_function``), so the window is
# exactly what the test suite runs against. This line is the only place it is
# declared: setup.py (install_requires) and tools/install.sh read it, and the
# evaluation backend can check the installed version against it.
FASTER_COCO_EVAL_REQUIREMENT = 'faster-coco-eval==1.8.0'
