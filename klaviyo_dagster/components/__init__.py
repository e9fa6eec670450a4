"""Components for `dg`: `KlaviyoComponent` (defs.yaml) and its scaffolder."""

from klaviyo_dagster.components.component import KlaviyoComponent
from klaviyo_dagster.components.scaffolder import KlaviyoComponentScaffolder, KlaviyoScaffoldParams

__all__ = ["KlaviyoComponent", "KlaviyoComponentScaffolder", "KlaviyoScaffoldParams"]
