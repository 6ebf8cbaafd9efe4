"""The provisioning pipeline (the drawing of its stages is written with the split)."""

from bulkprov.pipeline.clients import open_clients as open_clients
from bulkprov.pipeline.lifecycle import approve as approve
from bulkprov.pipeline.ondemand import check_connection as check_connection
from bulkprov.pipeline.ondemand import provision_user as provision_user
from bulkprov.pipeline.plan import apply_options as apply_options
from bulkprov.pipeline.plan import held_back_message as held_back_message
from bulkprov.pipeline.plan import make_plan as make_plan
from bulkprov.pipeline.plan import summary as summary
from bulkprov.pipeline.plan import verify_plan as verify_plan
from bulkprov.pipeline.run import COUNT_KEYS as COUNT_KEYS
from bulkprov.pipeline.run import Engine as Engine
from bulkprov.pipeline.run import RunResult as RunResult
from bulkprov.pipeline.run import RunStats as RunStats
from bulkprov.pipeline.run import run_sync as run_sync
