"""The default Zoom attribute-mapping table (the admin guide's "User Attribute Mappings")."""

from __future__ import annotations

from bulkprov.config import AttributeMapping

ENTERPRISE_DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"

#: ``active`` follows Entra's soft-delete flag: the default slot of the Switch is empty, so
#: a value other than "True"/"False" would flow nothing.
ACTIVE_EXPRESSION = 'Switch([IsSoftDeleted], , "False", "True", "True", "False")'

#: ``userType`` (Basic, Licensed, On-Prem) from the user's app role of the Zoom app, as
#: Entra's Zoom app maps it. Its source expression is not documented (facts.md §6.5);
#: this is the likely one. No role (scope mode "all", or Default Access): no userType sent.
USER_TYPE_EXPRESSION = "SingleAppRoleAssignment([appRoleAssignments])"

DEFAULT_ZOOM_MAPPINGS: list[AttributeMapping] = [
    AttributeMapping(target="userName", source="userPrincipalName", matching_precedence=1),
    AttributeMapping(target='emails[type eq "work"].value', source="mail"),
    AttributeMapping(target="name.givenName", source="givenName"),
    AttributeMapping(target="name.familyName", source="surname"),
    AttributeMapping(target="displayName", source="displayName"),
    AttributeMapping(target=ENTERPRISE_DEPARTMENT, source="department"),
    AttributeMapping(target="active", expression=ACTIVE_EXPRESSION),
    AttributeMapping(target="userType", expression=USER_TYPE_EXPRESSION),
]
