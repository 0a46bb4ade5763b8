__version__ = '0.1.0'

# The faster-coco-eval releases the fast LVIS backend is tested with. The
# backend relies on private internals of faster-coco-eval (1.7.x lacks
# ``_nonempty_iou_pairs``, 1.6.0 lacks ``print_function``), so the window is
# exactly what the test suite runs against. This line is the only place it is
# declared: setup.py (install_requires) and tools/install.sh read it, and the
# evaluation backend can check the installed version against it.
FASTER_COCO_EVAL_REQUIREMENT = 'faster-coco-eval==1.8.0'
