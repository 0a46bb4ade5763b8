"""The test-time scorers a RoI head reads from its test config."""
from typing import Any, List, Optional

from .bbox_predict import SCORERS_KEY, build_scorers


class ScorersFromTestCfg:
    """Mixin of the mmlongtail RoI heads: build the scorers named in a test
    config once and keep them (keyed by the config's text, so a test config
    edited after the model was built is honoured)."""

    def scorers_for(self, rcnn_test_cfg: Optional[Any],
                    key: str = SCORERS_KEY) -> List[Any]:
        """Built scorers of ``rcnn_test_cfg[key]`` (empty when absent)."""
        if rcnn_test_cfg is None:
            return []
        return self.build_scorers_once(rcnn_test_cfg.get(key))

    def build_scorers_once(self, cfgs: Optional[list]) -> List[Any]:
        """Built scorers of a list of configs (empty for None or ``[]``)."""
        if not cfgs:
            return []
        cache = self.__dict__.setdefault('_scorer_cache', {})
        text = repr(cfgs)
        if text not in cache:
            cache[text] = build_scorers(cfgs)
        return cache[text]
