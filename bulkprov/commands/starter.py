"""The commented starter config ``bulkprov init`` writes (Zoom, the admin guide's table).

Its own module because two commands use it: :mod:`.init` writes it as it is, and
:mod:`.demo` (with the benchmarks and tests) points it at the simulators.
"""

from __future__ import annotations

STARTER_TOML = """\
# bulkprov configuration: Microsoft Entra ID (Graph) -> Zoom SCIM.
# Secrets never go in this file: set the environment variables named below, or point
# `file = "..."` at a file that holds only the secret.

[graph]
# Entra admin center > App registrations > your app: Directory (tenant) ID and
# Application (client) ID. Application permissions: User.Read.All, GroupMember.Read.All,
# Application.Read.All, with admin consent.
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = { env = "BULKPROV_GRAPH_SECRET" }   # or { file = "/run/secrets/graph" }
# authority = "https://login.microsoftonline.com"
# base_url = "https://graph.microsoft.com/v1.0"
# page_size = 999                                   # Graph's maximum $top for /users

[target]
# Zoom's SCIM 2.0 API. Token: a Zoom SCIM token, or a server-to-server OAuth app's token
# with the scim2 scope.
base_url = "https://api.zoom.us/scim2"
token = { env = "BULKPROV_SCIM_TOKEN" }             # or { file = "/run/secrets/zoom" }
# "zoom": Zoom as it behaves (updates by PUT, pending invitations, per-label rate limits…;
# docs/zoom-from-entra.md, "What Zoom does differently"). "rfc" for other SCIM services.
profile = "zoom"
concurrency = 16
# Requests per second across all workers: with profile "zoom", all labels of [target.zoom]
# together. Zoom's limits are per account and shared with every app on it; 0: no overall
# cap (each label then goes up to its own limit). An "rfc" target is paced by this alone.
rate_limit = 60
# "rfc": lowercase ops, JSON booleans, group members removed by a filtered path
# (members[value eq "id"]); "entra": Entra's `Replace`, "False" strings, `Remove` with values.
patch_dialect = "rfc"
# A source attribute cleared in Entra: the target keeps its old value (Entra never
# provisions nulls); true sends a `remove` for it instead.
# clear_on_null = false

[target.zoom]
# Zoom's limits are per account and shared by every app on it, counted per label
# (Business+: Light 80/s for one user's GET/PUT/PATCH/DELETE, Medium 60/s for lists and
# filters). Lower them when other apps use the account's limits too.
light_per_second = 80
medium_per_second = 60
# post_label = "medium"      # the label of a create: undocumented, Medium is the safer guess
# licensed_seats = 500       # hold creates that would take Licensed users past this (seats)
# basic_cap = 9999           # Zoom's cap on Basic users per account

[state]
path = "bulkprov-state.sqlite3"    # relative paths here resolve against this file's folder

[scope]
# "all": every user in the tenant; "assigned": only users assigned to the app.
mode = "all"
# service_principal_id = "..."   # mode "assigned": the enterprise app's object id
# Scoping filters: clauses AND within a filter, filters OR across. Example:
# [[scope.filters]]
# name = "Sales only"
# clauses = [{ attribute = "department", operator = "EQUALS", value = "Sales" }]

[deprovision]
# Users who leave scope (unassigned, filtered out, disabled or deleted in Entra) are
# deactivated (active=false, meetings and recordings kept). DELETE only hard-deleted ones:
delete_hard_deleted = false
# Accidental-deletion prevention: a cycle that would disable/delete more than this many
# accounts sends none; review with `bulkprov staged`, send with `bulkprov approve`.
threshold = 500

# Proxies: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment are honoured (msal's
# token requests included). To set them here instead:
# [network]
# proxy = "http://proxy.corp.example:3128"      # "none": ignore the environment's proxy
# no_proxy = [".corp.example", "10.0.0.0/8"]
# proxy_username = "svc-bulkprov"                # with the password from a secret source:
# proxy_password = { env = "BULKPROV_PROXY_PASSWORD" }
# Bounds on one answer: seconds from first byte sent to last byte read, and bytes.
# deadline = 120
# max_page_bytes = 16777216     # a list page (Graph users, a SCIM ListResponse)
# max_answer_bytes = 1048576    # one resource, a token, an error

[groups]
# Provision assigned groups (all groups in mode "all") and their direct members.
enabled = true
member_chunk = 100            # members per PATCH (a group's adds and removals together)

# Attribute mappings (the admin guide's table). `source` = Direct (a Graph attribute),
# `expression` = Entra's expression language, `constant` = a fixed string.
# `apply = "creation"` sends a value only when the account is created;
# `default` is used when the source is empty (creation only).
[[mappings]]
target = "userName"
source = "userPrincipalName"
matching_precedence = 1
# If UPNs differ from email addresses (jsmith@corp.local vs jane.smith@company.com),
# map userName from "mail" instead.

[[mappings]]
target = 'emails[type eq "work"].value'
source = "mail"

[[mappings]]
target = "name.givenName"
source = "givenName"

[[mappings]]
target = "name.familyName"
source = "surname"

[[mappings]]
target = "displayName"
source = "displayName"

[[mappings]]
target = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
source = "department"

[[mappings]]
target = "active"
expression = 'Switch([IsSoftDeleted], , "False", "True", "True", "False")'

# Zoom's licence type (Basic, Licensed, On-Prem) from the user's app role of the Zoom app,
# as Entra's Zoom app maps it (its expression is undocumented; this is the likely one). Pro
# and Corp, the pre-2020 role names, are sent as Licensed and On-Prem with a warning.
# Zoom's licence attributes can be mapped too, e.g.
# target = "urn:ietf:params:scim:schemas:extension:zoom:1.0:User:zoomWhiteboard"
[[mappings]]
target = "userType"
expression = "SingleAppRoleAssignment([appRoleAssignments])"
"""
