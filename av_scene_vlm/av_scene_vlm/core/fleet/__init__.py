"""Fleet-scale drive mining: many recorded drives in one embedded vector store, searched by text or
by an example image, indexed in one process or on a Ray cluster.

ROS-free like the rest of the core (bags are read with `rosbags`). LanceDB and Ray are optional
(`pip install 'av_scene_vlm[fleet]'`): importing this package needs neither; using it without them
raises FleetError naming the extra.

Modules: `discover` (find bags, content hash), `spec` (the model as data), `frames` (decode and
embed stages), `store` (LanceDB tables, resume, ANN index), `index` (`index_bags`), `ray_index`
(the same job on Ray Data), `search` (`search_index`), `sheet` (contact sheet).
"""

from .bookkeeping import IndexSummary
from .discover import content_hash, find_bags
from .errors import FleetError, StorageError
from .index import RayOptions, index_bags
from .search import Hit, search_index
from .spec import EngineSpec, model_key
from .store import ANN_MIN_ROWS, FleetIndex, IndexInfo

__all__ = [
    "ANN_MIN_ROWS",
    "EngineSpec",
    "FleetError",
    "FleetIndex",
    "Hit",
    "IndexInfo",
    "IndexSummary",
    "RayOptions",
    "StorageError",
    "content_hash",
    "find_bags",
    "index_bags",
    "model_key",
    "search_index",
]
