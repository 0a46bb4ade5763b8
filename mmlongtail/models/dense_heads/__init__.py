"""Dense and query-based (DETR-family) heads of mmlongtail: mmdet's heads
with mmlongtail's test time."""
from .query_heads import (LongTailDeformableDETRHead,  # noqa: F401
                          LongTailDINOHead, QueryHeadPredictMixin,
                          query_layout,
                          query_test_settings, select_query_detections)
