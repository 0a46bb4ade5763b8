"""Evaluate the predictions a test saved, without the model.

    python tools/evaluate_predictions.py CONFIG PREDICTIONS_DIR \
        [--protocol standard fixed pooled] [--metric bbox segm boundary] \
        [--out-prefix PREFIX] [--cfg-options ...]

PREDICTIONS_DIR is the folder tools/test.py saved them to (by default
WORK_DIR/predictions/<checkpoint name>). The config's test_evaluator (an
mmlongtail.LVISMetric) gives the ground truth and the settings; by default
every protocol is computed, on boxes and, when the predictions carry masks,
on masks and mask boundaries. The results are printed as JSON.
"""
import argparse
import json

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from mmlongtail.evaluation.lvis_eval_output import IOU_TYPES
from mmlongtail.evaluation.lvis_metric import PROTOCOLS
from mmlongtail.evaluation.streamed_test import (evaluate_folder,
                                                 offline_metric)


def parse_args():
    p = argparse.ArgumentParser(description='Evaluate saved predictions')
    p.add_argument('config', help='the config the test ran')
    p.add_argument('predictions', help='the prediction folder')
    p.add_argument('--protocol', nargs='+', choices=PROTOCOLS,
                   help='default: all')
    p.add_argument('--metric', nargs='+', choices=IOU_TYPES,
                   help='default: bbox, and segm and boundary with masks')
    p.add_argument('--out-prefix',
                   help='write the results and per-class files here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys')
    return p.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    MMLogger.get_instance('mmlongtail', log_level='INFO')
    metric = offline_metric(cfg, args.predictions, args.protocol,
                            args.metric, args.out_prefix)
    results = evaluate_folder(args.predictions, metric)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
