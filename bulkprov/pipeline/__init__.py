"""The provisioning pipeline (the drawing of its stages is written with the split)."""

from bulkprov.pipeline.clients import open_clients as open_clients
from bulkprov.pipeline.decide import Engine as Engine
from bulkprov.pipeline.deprovision import approve as approve
from bulkprov.pipeline.ondemand import check_connection as check_connection
from bulkprov.pipeline.ondemand import provision_user as provision_user
from bulkprov.pipeline.plan import apply_options as apply_options
from bulkprov.pipeline.plan import held_back_message as held_back_message
from bulkprov.pipeline.plan import make_plan as make_plan
from bulkprov.pipeline.plan import summary as summary
from bulkprov.pipeline.plan import verify_plan as verify_plan
from bulkprov.pipeline.run import run_sync as run_sync
from bulkprov.pipeline.stats import COUNT_KEYS as COUNT_KEYS
from bulkprov.pipeline.stats import RunResult as RunResult
from bulkprov.pipeline.stats import RunStats as RunStats
