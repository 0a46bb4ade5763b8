"""The methods of the long-tail benchmark: one config each in
``configs/benchmark/``.

Three kinds of method, on two tracks:

* ``'train'``: trained with the shared schedule, from the benchmark's
  pretrained start (:mod:`.pretrain`) where the config reads it (every
  config of ``configs/benchmark/`` does, through ``baseline_ce.py``), else
  from scratch (``baseline_ce_scratch``);
* ``'stage2'``: a second stage trained from another method's checkpoint of
  the same seed (decoupled: BAGS, cRT); its config reads that checkpoint
  from ``$LONGTAIL_BENCH_INIT_CHECKPOINT``;
* ``'posthoc'``: no training: another method's checkpoint of the same seed
  evaluated with a test-time config delta (a scorer in
  ``test_cfg.rcnn.score_calibration``, a hook). One parameter of the delta
  (``param``, a name :func:`mmlongtail.apis.calibrate.sweep` takes) is
  chosen from ``values`` by that sweep on the held-out part of the training
  distribution, never on val; then val is evaluated once with the chosen
  value.

Track ``'two_stage'`` is the light Mask R-CNN (boxes and masks), track
``'one_stage'`` the light RetinaNet (boxes only), track ``'query'`` a small
DINO (boxes only; mmlongtail's ``LongTailDINOHead``). The first method of
each track is that track's baseline: the table compares the others with
it.
"""
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

#: What a method does before it is evaluated.
KINDS = ('train', 'stage2', 'posthoc')
#: The model families, in table order.
TRACKS = ('two_stage', 'one_stage', 'query')


@dataclass(frozen=True)
class Method:
    """One row of the benchmark.

    Attributes:
        key (str): Short name, also the work-dir prefix.
        label (str): Name in the table and the plots.
        config (str): Config file.
        init_from (str, optional): Key of the method whose checkpoint (same
            seed) this one starts from (``'stage2'``) or is evaluated on
            (``'posthoc'``). Required for those kinds, refused for
            ``'train'``.
        kind (str): One of :data:`KINDS`. Defaults to ``'train'``.
        track (str): One of :data:`TRACKS`. Defaults to ``'two_stage'``.
        param (str, optional): ``'posthoc'`` only: the parameter chosen on
            the held-out split, as :func:`mmlongtail.apis.calibrate.sweep`
            names it (``'NorCal.gamma'``, ``'LogitAdjustment.tau'``,
            ``'TauNormalizationHook.tau'``); the config must use that
            component (checked when the run's config is built).
        values (tuple[float], optional): ``'posthoc'`` only: the candidates.
        criterion (str): ``'posthoc'`` only: the sweep's criterion on box
            AP (``'AP'``, ``'APr'``, ``'APc'``, ``'APf'``) that chooses the
            value; the highest wins, ties to the earlier value. Defaults to
            ``'AP'``.
        built_on (str, optional): ``'train'`` only: the key of the row this
            method's config is built on when that is not the track's
            baseline (CAB on RFS is RFS plus CAB); the results then also
            compare the two (:func:`.results.paired_markdown`).
    """
    key: str
    label: str
    config: str
    init_from: Optional[str] = None
    kind: str = 'train'
    track: str = 'two_stage'
    param: Optional[str] = None
    values: Optional[Tuple[float, ...]] = None
    criterion: str = 'AP'
    built_on: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'{self.key}: kind must be one of {KINDS}, got '
                             f'{self.kind!r}')
        if self.track not in TRACKS:
            raise ValueError(f'{self.key}: track must be one of {TRACKS}, '
                             f'got {self.track!r}')
        if (self.init_from is None) != (self.kind == 'train'):
            raise ValueError(
                f'{self.key}: a {self.kind!r} method '
                f'{"needs" if self.init_from is None else "takes no"} '
                f'init_from, got {self.init_from!r}')
        posthoc = self.kind == 'posthoc'
        if posthoc and (not self.param or not self.values):
            raise ValueError(f'{self.key}: a post-hoc method needs param and '
                             f'values, got {self.param!r}, {self.values!r}')
        if not posthoc and (self.param is not None
                            or self.values is not None):
            raise ValueError(f'{self.key}: only post-hoc methods choose a '
                             f'parameter, got param={self.param!r}')
        if self.built_on is not None and self.kind != 'train':
            raise ValueError(f'{self.key}: built_on names the row a trained '
                             f'method adds its change to; a {self.kind!r} '
                             'method has init_from')
        if self.values is not None:
            object.__setattr__(self, 'values',
                               tuple(float(v) for v in self.values))


def default_methods(config_dir: str = 'configs/benchmark') -> List[Method]:
    """The methods of the benchmark, each track's baseline first. Post-hoc
    candidates: NorCal's gamma around its config's 0.6, logit adjustment's
    tau around Menon et al.'s 1, τ-norm's tau from 0 (the plain classifier)
    to 1 (unit-norm rows); each chosen by held-out box AP."""

    def m(key: str, label: str, **kw) -> Method:
        return Method(key, label, osp.join(config_dir, f'{key}.py'), **kw)

    return [
        # two-stage track: trained (from the pretrained start)
        m('baseline_ce', 'CE baseline'),
        # the same without the pretrained start (third edition)
        m('baseline_ce_scratch', 'CE baseline (from scratch)'),
        m('rfs', 'RFS'),
        m('seesaw_normed_mask', 'Seesaw + Norm Mask'),
        m('eql', 'EQL'),
        m('eqlv2', 'EQLv2'),
        m('focal', 'Focal'),
        m('federated', 'Federated loss'),
        m('ecm', 'ECM + Norm Mask'),
        m('gumbel_droploss', 'GOL (Gumbel + DropLoss)'),
        m('balanced_softmax', 'Balanced softmax'),
        m('class_balanced_focal', 'Class-balanced focal'),
        m('class_aware', 'Class-balanced sampling'),
        m('progressive', 'Progressively-balanced sampling'),
        # two-stage track, third wave: trained
        m('cab_ce', 'CAB'),
        m('cab_rfs', 'RFS + CAB', built_on='rfs'),
        m('cab_eqlv2', 'EQLv2 + CAB', built_on='eqlv2'),
        m('cab_ecm', 'ECM + Norm Mask + CAB', built_on='ecm'),
        m('seesaw_pcb', 'Seesaw + PCB', built_on='seesaw_normed_mask'),
        m('gap_ce', 'GAP + CE'),
        m('apa_gol', 'APA + GOL', built_on='gumbel_droploss'),
        m('ldam_drw', 'LDAM + DRW'),
        m('fasa', 'FASA'),
        m('feature_cloud', 'Feature cloud (cosine classifier)'),
        m('smote', 'SMOTE (RoI features)'),
        m('bbn', 'BBN-style cumulative learning'),
        m('dcl', 'DCL (scheduler + triplet)', built_on='progressive'),
        m('lds', 'LDS (box regression)'),
        m('fds', 'FDS (box regression)'),
        # the learning-rate sweep of the rows that lost their boxes in the
        # second edition (the track's LR is 0.04)
        m('eqlv2_lr0p02', 'EQLv2, LR 0.02', built_on='eqlv2'),
        m('eqlv2_lr0p01', 'EQLv2, LR 0.01', built_on='eqlv2'),
        m('ecm_lr0p02', 'ECM + Norm Mask, LR 0.02', built_on='ecm'),
        m('ecm_lr0p01', 'ECM + Norm Mask, LR 0.01', built_on='ecm'),
        # two-stage track: classifier retrained on the baseline
        m('bags_decoupled', 'BAGS (decoupled)', init_from='baseline_ce',
          kind='stage2'),
        m('crt', 'cRT', init_from='baseline_ce', kind='stage2'),
        m('lws', 'LWS', init_from='baseline_ce', kind='stage2'),
        # two-stage track: the baseline's checkpoint rescored
        m('norcal', 'NorCal', init_from='baseline_ce', kind='posthoc',
          param='NorCal.gamma', values=(0.1, 0.2, 0.4, 0.6, 0.8, 1.0)),
        m('logit_adjustment', 'Logit adjustment (post-hoc)',
          init_from='baseline_ce', kind='posthoc',
          param='LogitAdjustment.tau',
          values=(0.1, 0.25, 0.5, 0.75, 1.0, 1.25)),
        m('tau_norm', 'τ-norm', init_from='baseline_ce', kind='posthoc',
          param='TauNormalizationHook.tau',
          values=(0.0, 0.25, 0.5, 0.75, 1.0)),
        m('fracal', 'FRACAL', init_from='baseline_ce', kind='posthoc',
          param='FRACAL.fractal_l', values=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0)),
        m('ncm', 'NCM', init_from='baseline_ce', kind='posthoc',
          param='NCMClassifierHook.temperature',
          values=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0)),
        # one-stage track
        m('retinanet_focal', 'RetinaNet focal', track='one_stage'),
        m('retinanet_efl', 'RetinaNet EFL', track='one_stage'),
        m('retinanet_efl_rfs', 'RetinaNet EFL + RFS', track='one_stage'),
        # query-based track (small DINO; the configs' losses in their
        # query-head mode, the class match cost asking the loss)
        m('dino_focal', 'DINO focal', track='query'),
        m('dino_federated', 'DINO federated', track='query'),
        m('dino_eqlv2', 'DINO EQLv2', track='query'),
        m('dino_rfs', 'DINO focal + RFS', track='query'),
    ]


def track_baselines(methods: Sequence[Method]) -> dict:
    """``{track: key of its first method}`` for the tracks present."""
    out: dict = {}
    for m in methods:
        out.setdefault(m.track, m.key)
    return out
