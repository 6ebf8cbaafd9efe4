"""Mapping compilation: compile-time checks, map_user output, update diffs and digests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkprov.config import AttributeMapping, parse_config
from bulkprov.errors import MappingError, UserDataError
from bulkprov.mapping import (
    DEFAULT_ZOOM_MAPPINGS,
    ExpressionSyntaxError,
    MappedUser,
    MappingContext,
    UserMapper,
    compile_expression,
    compile_mappings,
)

GOLDEN = Path(__file__).parent / "golden"
ZOOM_EXTENSION = "urn:us:zoom:scim:schemas:extension:1.0:ZoomUser"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

ADA: dict[str, Any] = {
    "id": "5c7e2b4a-6f1d-4f8e-9a51-0d2e4b8c9f10",
    "userPrincipalName": "ada.lovelace@contoso.com",
    "mail": "ada@contoso.com",
    "givenName": "Ada",
    "surname": "Lovelace",
    "displayName": "Ada Lovelace",
    "department": "Engineering",
    "accountEnabled": True,
    "jobTitle": "Analyst",
}


def rows(*mappings: dict[str, Any]) -> list[AttributeMapping]:
    return [AttributeMapping.model_validate(m) for m in mappings]


def mapper_of(*mappings: dict[str, Any]) -> UserMapper:
    return compile_mappings(rows(*mappings))


@pytest.fixture
def zoom() -> UserMapper:
    return compile_mappings(DEFAULT_ZOOM_MAPPINGS)


class TestDefaultZoomTable:
    def test_golden_post_body(self, zoom: UserMapper) -> None:
        """The default Zoom table maps a user to exactly the golden POST payload."""
        golden = json.loads((GOLDEN / "default-zoom-post.json").read_text(encoding="utf-8"))
        mapped = zoom.map_user(ADA, MappingContext())
        assert mapped.resource == golden
        assert mapped.body == orjson.dumps(golden)  # same keys, same order

    def test_values_and_update_values(self, zoom: UserMapper) -> None:
        """values are target path → value in mapping order; active is a JSON boolean;
        userType is the app role (issue 18: the admin guide's table maps it)."""
        role = {"appRoleId": "11111111-0000-0000-0000-000000000000", "value": "Licensed"}
        mapped = zoom.map_user(ADA, MappingContext(app_role_assignments=[role]))
        assert mapped.values == {
            "userName": "ada.lovelace@contoso.com",
            'emails[type eq "work"].value': "ada@contoso.com",
            "name.givenName": "Ada",
            "name.familyName": "Lovelace",
            "displayName": "Ada Lovelace",
            f"{ENTERPRISE}:department": "Engineering",
            "active": True,
            "userType": "Licensed",
        }
        assert list(mapped.values) == list(zoom.targets)
        # without an app role (scope mode "all", Default Access) no userType is sent
        assert "userType" not in zoom.map_user(ADA).values
        assert mapped.update_values == mapped.values
        assert mapped.user_name == "ada.lovelace@contoso.com"

    def test_soft_deleted_user_is_inactive(self, zoom: UserMapper) -> None:
        """[IsSoftDeleted] comes from the context: active=false for a soft-deleted user."""
        mapped = zoom.map_user(ADA, MappingContext(is_soft_deleted=True))
        assert mapped.values["active"] is False
        assert mapped.resource["active"] is False

    def test_null_attributes_are_not_sent(self, zoom: UserMapper) -> None:
        """Null sources are omitted, and an unused extension is not listed in schemas."""
        user = {**ADA, "mail": None, "department": None}
        del user["surname"]
        mapped = zoom.map_user(user)
        assert set(mapped.values) == {"userName", "name.givenName", "displayName", "active"}
        assert mapped.resource == {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada.lovelace@contoso.com",
            "name": {"givenName": "Ada"},
            "displayName": "Ada Lovelace",
            "active": True,
        }

    def test_mapper_metadata(self, zoom: UserMapper) -> None:
        """$select names, matching order and path sets of the default table."""
        assert zoom.source_attributes == {
            "id",
            "userPrincipalName",
            "accountEnabled",
            "mail",
            "givenName",
            "surname",
            "displayName",
            "department",
        }
        assert zoom.matching == ("userName",)
        assert zoom.redacted_paths == frozenset()
        assert zoom.create_only_paths == frozenset()

    def test_loads_from_toml_shaped_config(self) -> None:
        """A Config built from plain data compiles (the path the CLI takes)."""
        cfg = parse_config(
            {
                "graph": {"tenant_id": "t", "client_id": "c"},
                "target": {"base_url": "https://api.zoom.us/scim2"},
                "mappings": [m.model_dump(exclude_none=True) for m in DEFAULT_ZOOM_MAPPINGS],
            }
        )
        assert compile_mappings(cfg.mappings).targets == tuple(
            m.target for m in DEFAULT_ZOOM_MAPPINGS
        )


class TestUpdatesAndDigests:
    @pytest.fixture
    def mapper(self) -> UserMapper:
        return mapper_of(
            {"target": "userName", "source": "userPrincipalName", "matching_precedence": 1},
            {"target": "displayName", "source": "displayName"},
            {"target": "title", "source": "jobTitle", "default": "Staff"},
            {"target": "externalId", "source": "id", "apply": "creation"},
            {"target": "nickName", "type": "none", "default": "n/a"},
            {"target": "active", "expression": "Not([IsSoftDeleted])"},
        )

    def test_update_values_exclude_create_only_and_defaults(self, mapper: UserMapper) -> None:
        """Create-only paths and default-if-null fills are in values, not update_values."""
        mapped = mapper.map_user({**ADA, "jobTitle": None})
        assert mapped.values == {
            "userName": ADA["userPrincipalName"],
            "displayName": "Ada Lovelace",
            "title": "Staff",
            "externalId": ADA["id"],
            "nickName": "n/a",
            "active": True,
        }
        assert mapped.update_values == {
            "userName": ADA["userPrincipalName"],
            "displayName": "Ada Lovelace",
            "active": True,
        }
        assert mapper.create_only_paths == {"externalId"}

    def test_digest_changes_iff_an_update_value_changes(self, mapper: UserMapper) -> None:
        """The digest follows update_values only, and is stable across calls."""
        base = mapper.map_user(ADA)
        assert base.digest == mapper.map_user(dict(ADA)).digest
        assert len(base.digest) == 32
        int(base.digest, 16)
        renamed = mapper.map_user({**ADA, "displayName": "Ada King"})
        assert renamed.digest != base.digest
        new_id = mapper.map_user({**ADA, "id": "other"})  # externalId is create-only
        assert new_id.values != base.values
        assert new_id.digest == base.digest
        disabled = mapper.map_user(ADA, MappingContext(is_soft_deleted=True))
        assert disabled.digest != base.digest

    def test_digest_does_not_depend_on_key_order(self) -> None:
        """Equal update values give equal digests whatever their order."""
        a = MappedUser(mapper_of({"target": "userName", "source": "x"}), {}, {"a": 1, "b": 2})
        b = MappedUser(mapper_of({"target": "userName", "source": "x"}), {}, {"b": 2, "a": 1})
        assert a.digest == b.digest

    def test_results_are_independent(self, mapper: UserMapper) -> None:
        """Each map_user call returns fresh dicts."""
        one, two = mapper.map_user(ADA), mapper.map_user(ADA)
        one.values["displayName"] = "changed"
        one.resource["userName"] = "changed"
        assert two.values["displayName"] == "Ada Lovelace"
        assert two.resource["userName"] == ADA["userPrincipalName"]


class TestCompileErrors:
    def test_arity_error_at_compile_time(self) -> None:
        """A wrong argument count fails when the table compiles, naming row and column."""
        with pytest.raises(ExpressionSyntaxError) as info:
            compile_mappings(
                rows(
                    {"target": "userName", "source": "userPrincipalName"},
                    {"target": "displayName", "expression": 'Join(" ", Left([givenName]))'},
                ),
                config_path="bulkprov.toml",
            )
        error = info.value
        assert error.key == "mappings[1].expression"
        assert error.path == "bulkprov.toml"
        assert str(error) == (
            "bulkprov.toml: mappings[1].expression: Left takes 2 arguments, got 1: "
            "Left(String, NumChars) (at column 11)\n"
            '    Join(" ", Left([givenName]))\n'
            "              ^"
        )

    @pytest.mark.parametrize(
        ("mapping", "key", "message"),
        [
            ({"target": "x", "expression": "Swich([a])"}, "expression", "did you mean 'Switch'"),
            ({"target": "emails[type ne 1]", "source": "mail"}, "target", "invalid SCIM path"),
            ({"target": "id", "source": "id"}, "target", "'id' is assigned by the SCIM"),
            ({"target": "x", "source": "bad name"}, "source", "invalid source attribute name"),
            ({"target": "active", "constant": "maybe"}, "constant", "expected a boolean"),
            ({"target": "active", "expression": '"yes"'}, "expression", "expected a boolean"),
            ({"target": "active", "source": "x", "default": "yes"}, "default", "boolean"),
            (
                {"target": "x", "type": "none", "default": "d", "matching_precedence": 2},
                "matching_precedence",
                "a matching attribute needs a source",
            ),
            (
                {"target": "x", "expression": 'SelectUniqueValue("a", "b")'},
                "apply",
                'set apply = "creation"',
            ),
            (
                {
                    "target": "x",
                    "expression": 'SelectUniqueValue("a", "b")',
                    "apply": "creation",
                    "matching_precedence": 2,
                },
                "matching_precedence",
                "cannot be used on a matching attribute",
            ),
            ({"target": "x", "expression": 'CDate("soon")'}, "expression", "CDate: cannot read"),
            ({"target": "x", "expression": "Mid([a], 0, 1)"}, "expression", "start must be"),
        ],
    )
    def test_row_errors_name_the_key(self, mapping: dict[str, Any], key: str, message: str) -> None:
        """Each kind of bad row raises a MappingError naming mappings[1].<key>."""
        with pytest.raises(MappingError) as info:
            compile_mappings(
                rows({"target": "userName", "source": "userPrincipalName"}, mapping),
                config_path="c.toml",
            )
        assert info.value.key == f"mappings[1].{key}"
        assert message in str(info.value)
        assert str(info.value).startswith(f"c.toml: mappings[1].{key}: ")

    def test_duplicate_target_case_insensitive(self) -> None:
        """SCIM attribute names are case-insensitive: userName and username collide."""
        with pytest.raises(MappingError, match=r"already mapped by mappings\[0\]") as info:
            mapper_of({"target": "userName", "source": "a"}, {"target": "username", "source": "b"})
        assert info.value.key == "mappings[1].target"

    def test_duplicate_matching_precedence(self) -> None:
        """Two rows cannot share a matching precedence."""
        with pytest.raises(MappingError, match="precedence 1 is also used by mappings"):
            mapper_of(
                {"target": "userName", "source": "a", "matching_precedence": 1},
                {"target": "externalId", "source": "b", "matching_precedence": 1},
            )

    def test_empty_required_argument(self) -> None:
        """An empty slot where an argument is required is a compile-time error."""
        with pytest.raises(ExpressionSyntaxError, match=r"argument 1 \(source\) cannot be empty"):
            compile_expression('Append( , "x")')


class TestMapUser:
    def test_user_data_error_names_target(self) -> None:
        """A per-user evaluation failure is a UserDataError naming the target."""
        mapper = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {"target": f"{ENTERPRISE}:employeeNumber", "expression": "CDate([employeeHireDate])"},
        )
        assert mapper.map_user({"userPrincipalName": "u"}).values == {"userName": "u"}
        with pytest.raises(UserDataError) as info:
            mapper.map_user({"userPrincipalName": "u", "employeeHireDate": "someday"})
        assert str(info.value).startswith(f"{ENTERPRISE}:employeeNumber: CDate: cannot read")

    def test_unexpected_errors_become_user_data_errors(self) -> None:
        """A malformed Graph object fails that user only."""

        class Broken(dict[str, Any]):
            def get(self, key: str, default: Any = None) -> Any:
                raise RuntimeError("boom")

        mapper = mapper_of({"target": "userName", "source": "userPrincipalName"})
        with pytest.raises(UserDataError, match="userName: cannot map: RuntimeError: boom"):
            mapper.map_user(Broken())

    def test_select_unique_value_uses_the_context_check(self) -> None:
        """SelectUniqueValue asks is_unique(target, value) and takes the first unique one."""
        mapper = mapper_of(
            {"target": "userName", "source": "userPrincipalName", "matching_precedence": 1},
            {
                "target": "externalId",
                "apply": "creation",
                "expression": (
                    'SelectUniqueValue(Join(".", [givenName], [surname]), '
                    'Join(".", Mid([givenName], 1, 1), [surname]), '
                    'Join(".", Mid([givenName], 1, 2), [surname]))'
                ),
            },
        )
        taken = {"Ada.Lovelace", "A.Lovelace"}
        calls: list[tuple[str, str]] = []

        def is_unique(path: str, value: str) -> bool:
            calls.append((path, value))
            return value not in taken

        mapped = mapper.map_user(ADA, MappingContext(is_unique=is_unique))
        assert mapped.values["externalId"] == "Ad.Lovelace"
        assert calls == [
            ("externalId", "Ada.Lovelace"),
            ("externalId", "A.Lovelace"),
            ("externalId", "Ad.Lovelace"),
        ]
        taken.add("Ad.Lovelace")
        with pytest.raises(UserDataError, match="all 3 candidate values already exist"):
            mapper.map_user(ADA, MappingContext(is_unique=is_unique))
        assert mapper.map_user(ADA).values["externalId"] == "Ada.Lovelace"

    def test_redacted_paths_and_loggable_values(self) -> None:
        """Redact() flows the value but marks the target; logs show [Redact]."""
        mapper = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {"target": "password", "expression": "Redact(RandomString(12, 2, 2, 2, 2))"},
        )
        assert mapper.redacted_paths == {"password"}
        mapped = mapper.map_user(ADA)
        assert len(mapped.values["password"]) == 12
        assert mapped.loggable_values() == {
            "userName": ADA["userPrincipalName"],
            "password": "[Redact]",
        }
        assert mapped.values["password"] not in repr(mapped)

    def test_roles(self) -> None:
        """Role functions feed roles[...] paths; the additive (Add-only) one is flagged."""
        assignments = (
            {"appRoleId": "r1", "value": "Licensed", "displayName": "Licensed"},
            {"appRoleId": "r2", "value": "Admin", "displayName": "Admin"},
        )
        single = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {
                "target": 'roles[primary eq "True"].value',
                "expression": "SingleAppRoleAssignment([appRoleAssignments])",
            },
        )
        mapped = single.map_user(ADA, MappingContext(app_role_assignments=assignments[:1]))
        assert mapped.resource["roles"] == [{"primary": True, "value": "Licensed"}]
        complex_ = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {"target": "roles", "expression": "AppRoleAssignmentsComplex([appRoleAssignments])"},
        )
        assert complex_.additive_paths == {"roles"}
        mapped = complex_.map_user(ADA, MappingContext(app_role_assignments=assignments))
        assert [r["value"] for r in mapped.resource["roles"]] == ["Admin", "Licensed"]
        assert mapped.values["roles"][0] == {
            "primary": False,
            "type": "WindowsAzureActiveDirectoryRole",
            "value": "Admin",
            "display": "Admin",
        }
        assertive = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {
                "target": "roles",
                "expression": "AssertiveAppRoleAssignmentsComplex([appRoleAssignments])",
            },
        )
        assert assertive.additive_paths == frozenset()

    def test_a_list_for_a_single_valued_target_fails_the_user(self) -> None:
        """Issue 20 item 5: Entra's SchemaPropertyCanOnlyAcceptValue, not a JSON array.

        A list-valued source (``otherMails``, ``businessPhones``, a Split) mapped to a
        single-valued target fails that user with a reason; one value is that value, an
        empty list is null; multi-valued targets (``emails``, custom extensions) keep lists.
        """
        mapper = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {"target": 'emails[type eq "work"].value', "source": "otherMails"},
            {"target": "displayName", "expression": 'Split([displayName], " ")'},
            {"target": f"{ENTERPRISE}:department", "source": "department"},
            {"target": "emails", "expression": 'Split([jobTitle], ",")'},
            {"target": f"{ZOOM_EXTENSION}:tags", "expression": 'Split([jobTitle], ",")'},
        )
        two = {**ADA, "otherMails": ["a@contoso.com", "b@contoso.com"], "displayName": "Ada"}
        with pytest.raises(UserDataError) as info:
            mapper.map_user(two)
        message = str(info.value)
        assert message.startswith('emails[type eq "work"].value: SchemaPropertyCanOnlyAcceptValue')
        assert "the source has 2" in message
        with pytest.raises(UserDataError, match="^displayName: SchemaPropertyCanOnlyAcceptValue"):
            mapper.map_user(ADA)  # "Ada Lovelace" split in two
        with pytest.raises(UserDataError, match=f"^{ENTERPRISE}:department: Schema"):
            mapper.map_user({**ADA, "displayName": "Ada", "department": ["R&D", "Ops"]})
        one = {**ADA, "otherMails": ["a@contoso.com"], "displayName": "Ada", "jobTitle": "x,y"}
        values = mapper.map_user(one).values
        assert values['emails[type eq "work"].value'] == "a@contoso.com"
        assert values["displayName"] == "Ada"
        assert values["emails"] == ["x", "y"] and values[f"{ZOOM_EXTENSION}:tags"] == ["x", "y"]
        empty = mapper.map_user({**one, "otherMails": []}).values
        assert 'emails[type eq "work"].value' not in empty
        # the target's /Schemas decide for extension attributes when known
        schemas = [{"id": ZOOM_EXTENSION, "attributes": [{"name": "tags", "multiValued": False}]}]
        strict = compile_mappings(
            rows(
                {"target": "userName", "source": "userPrincipalName"},
                {"target": f"{ZOOM_EXTENSION}:tags", "expression": 'Split([jobTitle], ",")'},
            ),
            resource_schemas=iter(schemas),
        )
        with pytest.raises(UserDataError, match="SchemaPropertyCanOnlyAcceptValue"):
            strict.map_user(one)

    def test_extension_schemas_are_listed_in_order(self) -> None:
        """schemas lists core, then each extension with a value, in mapping order."""
        mapper = mapper_of(
            {"target": "userName", "source": "userPrincipalName"},
            {"target": f"{ZOOM_EXTENSION}:loginType.sso", "constant": "true"},
            {"target": f"{ENTERPRISE}:department", "source": "department"},
            {"target": "userType", "expression": '"Licensed"'},
        )
        resource = mapper.map_user(ADA).resource
        assert resource["schemas"] == [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ZOOM_EXTENSION,
            ENTERPRISE,
        ]
        assert resource[ZOOM_EXTENSION] == {"loginType": {"sso": "true"}}
        assert resource["userType"] == "Licensed"

    def test_resource_schemas_drive_coercion(self) -> None:
        """With /Schemas, boolean and integer attributes get JSON types."""
        schemas = [
            {
                "id": ZOOM_EXTENSION,
                "attributes": [
                    {
                        "name": "loginType",
                        "type": "complex",
                        "subAttributes": [{"name": "sso", "type": "boolean"}],
                    },
                    {"name": "seats", "type": "integer"},
                ],
            }
        ]
        mapper = compile_mappings(
            rows(
                {"target": "userName", "source": "userPrincipalName"},
                {"target": f"{ZOOM_EXTENSION}:loginType.sso", "source": "accountEnabled"},
                {"target": f"{ZOOM_EXTENSION}:seats", "expression": 'Count(Split("a,b", ","))'},
            ),
            resource_schemas=schemas,
        )
        values = mapper.map_user(ADA).values
        assert values[f"{ZOOM_EXTENSION}:loginType.sso"] is True
        assert values[f"{ZOOM_EXTENSION}:seats"] == 2

    def test_source_attributes_for_select(self) -> None:
        """$select gets Graph names: objectId → id, extensionAttributeN → its container."""
        mapper = mapper_of(
            {"target": "userName", "source": "[userPrincipalName]"},
            {"target": "externalId", "expression": "Coalesce([objectId], [extensionAttribute3])"},
            {"target": "title", "expression": 'Switch([IsSoftDeleted], [jobTitle], "True", "x")'},
            {"target": "nickName", "source": "extension_abc_nick"},
            {"target": "locale", "source": "mobile"},
        )
        assert mapper.source_attributes == {
            "id",
            "userPrincipalName",
            "accountEnabled",
            "onPremisesExtensionAttributes",
            "jobTitle",
            "extension_abc_nick",
            "mobilePhone",
        }

    def test_matching_order(self) -> None:
        """matching lists targets by precedence, lowest first."""
        mapper = mapper_of(
            {"target": "externalId", "source": "id", "matching_precedence": 2},
            {"target": "userName", "source": "userPrincipalName", "matching_precedence": 1},
            {"target": "displayName", "source": "displayName"},
        )
        assert mapper.matching == ("userName", "externalId")


class TestCompileExpression:
    def test_evaluate_without_context(self) -> None:
        """evaluate() uses a default context when none is given."""
        compiled = compile_expression('Switch([IsSoftDeleted], , "False", "True", "True", "False")')
        assert compiled.evaluate({}) == "True"
        assert compiled.attributes == {"IsSoftDeleted"}
        assert compiled.source_attributes == frozenset()
        assert not compiled.constant

    def test_constant_folding(self) -> None:
        """Calls on constants are evaluated once, at compile time."""
        compiled = compile_expression('ToUpper(Join("-", "a", Left("bcd", 2)))')
        assert compiled.constant
        assert compiled.value == "A-BC"
        assert compiled.functions == {"ToUpper", "Join", "Left"}

    def test_impure_functions_are_not_folded(self) -> None:
        """Guid() and Now() are evaluated per user."""
        compiled = compile_expression("Guid()")
        assert not compiled.constant
        assert compiled.evaluate({}) != compiled.evaluate({})

    def test_location_in_errors(self) -> None:
        """config_path and key are added to the message when given."""
        with pytest.raises(ExpressionSyntaxError) as info:
            compile_expression("Left([a])", config_path="x.toml", key="mappings[0].expression")
        assert str(info.value).startswith("x.toml: mappings[0].expression: Left takes 2")
