"""``bulkprov mapping import|export`` with Entra's own JSON: schemas, object mappings, filters.

Microsoft's published examples (tests/mapping/samples, sources in its README) are imported
as they are; what import prints must load as a config, and import → export → import must
give the same table.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar, get_args

import pytest
from click.testing import CliRunner, Result

from bulkprov.cli import main
from bulkprov.commands.starter import STARTER_TOML
from bulkprov.config import (
    AttributeMapping,
    ScopingClause,
    ScopingFilter,
    ScopingOperator,
    load_config,
)
from bulkprov.errors import ConfigError
from bulkprov.mapping.exchange import (
    GROUP_MAPPING_NAME,
    Imported,
    from_graph,
    from_toml,
    to_object_mapping,
    to_schema,
    to_toml,
)
from bulkprov.pipeline import Engine

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def import_file(tmp_path: Path, doc: Any, *options: str, name: str = "in.json") -> Result:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return run("mapping", "import", str(path), *options)


def load_with(tmp_path: Path, tables: str) -> Any:
    """The starter config with its [[mappings]] replaced by ``tables``: what a user does."""
    head = STARTER_TOML.split("# Attribute mappings")[0]
    path = tmp_path / "bulkprov.toml"
    path.write_text(head + tables, encoding="utf-8")
    return load_config(path)


def schema_with(object_mappings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "directories": [],
        "synchronizationRules": [
            {"id": "r1", "name": "USER_OUTBOUND_USER", "objectMappings": object_mappings}
        ],
    }


def user_mapping(rows: list[dict[str, Any]], scope: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "attributeMappings": rows,
        "enabled": True,
        "flowTypes": "Add, Update, Delete",
        "name": "Provision Microsoft Entra ID Users",
        "scope": scope,
        "sourceObjectName": "User",
        "targetObjectName": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        **extra,
    }


def attr(target: str, name: str, priority: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "targetAttributeName": target,
        "source": {"expression": f"[{name}]", "name": name, "parameters": [], "type": "Attribute"},
        "matchingPriority": priority,
        **extra,
    }


BASE_ROWS = [attr("userName", "userPrincipalName", 1), attr("displayName", "displayName")]


class TestMicrosoftObjectMappingExample:
    """The objectMapping JSON Example of Graph's reference (Salesforce's user mapping)."""

    def test_every_row_is_read(self) -> None:
        imported = from_graph(sample("graph-objectmapping-example.json"))
        rows = {m.target: m for m in imported.mappings}
        assert len(imported.mappings) == 14
        assert rows["IsActive"].expression == "Not([IsSoftDeleted])"
        assert rows["IsActive"].default == "True"
        assert rows["Alias"].expression == "Mid([userPrincipalName], 1, 8)"
        assert rows["Email"].source == "mail"
        assert rows["EmailEncodingKey"].type == "none"
        assert rows["EmailEncodingKey"].default == "ISO-8859-1"
        assert rows["LocaleSidKey"].expression == 'Replace([preferredLanguage], "-", , , "_", , )'
        assert rows["ProfileName"].default == "Chatter Free User"
        # "Username" is SCIM's userName (attribute names ignore case, RFC 7643 §2.1)
        assert rows["userName"].source == "userPrincipalName"
        assert rows["userName"].matching_precedence == 1
        assert all(m.apply == "always" for m in imported.mappings)
        assert imported.filters == [] and imported.groups is None
        assert any("'Username' imported as 'userName'" in n for n in imported.notes)

    def test_imports_on_the_command_line_and_loads_as_a_config(self, tmp_path: Path) -> None:
        result = import_file(tmp_path, sample("graph-objectmapping-example.json"))
        assert result.exit_code == 0, result.output
        assert result.stderr.rstrip().endswith("14 mappings checked")
        cfg = load_with(tmp_path, result.stdout)
        engine = Engine(cfg)
        mapped = engine.mapper.map_user(
            {
                "userPrincipalName": "adele.vance@contoso.com",
                "mail": "adele@contoso.com",
                "givenName": "Adele",
                "preferredLanguage": "en-US",
            }
        )
        assert mapped.values["Alias"] == "adele.va"
        assert mapped.values["LocaleSidKey"] == "en_US"
        assert mapped.values["LastName"] == "."  # the default, on creation
        assert mapped.values["IsActive"] == "True"
        assert engine.mapper.matching == ("userName",)


class TestMicrosoftFullSchema:
    """The schema of Graph's "Configure synchronization with custom target attributes"."""

    def test_the_user_mapping_is_picked_from_the_rules(self) -> None:
        imported = from_graph(sample("graph-custom-target-attributes-schema.json"))
        assert [m.target for m in imported.mappings] == ["IsActive"]
        assert imported.mappings[0].expression == "Not([IsSoftDeleted])"
        assert imported.notes[0].startswith(
            "user mapping: 'Synchronize Azure Active Directory Users to salesforce.com' "
            "(User → User, rule 'USER_OUTBOUND_USER'): 1 attribute mappings, no scoping filters"
        )

    def test_the_edited_schema_is_read_too(self) -> None:
        """The page's edited schema: a source without "expression", no flowType, no priority."""
        imported = from_graph(sample("graph-custom-target-attributes-schema-edited.json"))
        assert imported.mappings == [
            AttributeMapping(target="officeCode", source="extensionAttribute10")
        ]

    def test_import_says_why_it_cannot_load(self, tmp_path: Path) -> None:
        """Microsoft's response is shortened: no userName, no matching attribute. Import
        refuses it for the reason a config load would, and says what it took."""
        result = import_file(tmp_path, sample("graph-custom-target-attributes-schema.json"))
        assert result.exit_code == 2
        assert "user mapping: 'Synchronize Azure Active Directory Users" in result.stderr
        assert "a mapping to 'userName' is required" in result.stderr
        assert result.stdout == ""

    def test_with_the_full_mapping_and_microsofts_scoping_filter(self, tmp_path: Path) -> None:
        """The schema holding the complete user mapping of the objectMapping example, scoped
        by Microsoft's scoping filter example: everything imports and loads."""
        schema = sample("graph-custom-target-attributes-schema.json")
        om = schema["synchronizationRules"][0]["objectMappings"][0]
        om["attributeMappings"] = sample("graph-objectmapping-example.json")["attributeMappings"]
        om["scope"] = sample("graph-scoping-filter-example.json")
        result = import_file(tmp_path, schema)
        assert result.exit_code == 0, result.output
        assert "14 mappings and 1 scoping filter checked" in result.stderr
        assert "1 scoping filter" in result.stderr.splitlines()[0]
        assert (
            "[[scope.filters]]\n"
            'name = "AD On Premise users"\n'
            "clauses = [\n"
            '    { attribute = "dirSyncEnabled", operator = "EQUALS", value = "True" },\n'
            "]\n"
        ) in result.stdout
        cfg = load_with(tmp_path, result.stdout)
        scope = Engine(cfg).scope
        # dirSyncEnabled is Graph's onPremisesSyncEnabled (a boolean)
        assert scope.evaluate({"onPremisesSyncEnabled": True}).in_scope
        assert not scope.evaluate({"onPremisesSyncEnabled": False}).in_scope
        assert not scope.evaluate({}).in_scope


ALL_OPERATORS = [
    ("EQUALS", "department", ["Sales"]),
    ("NOT_EQUALS", "department", ["Legal"]),
    ("IS_TRUE", "accountEnabled", []),
    ("IS_FALSE", "showInAddressList", []),
    ("IS_NULL", "faxNumber", []),
    ("IS_NOT_NULL", "mail", []),
    ("REGEX_MATCH", "userPrincipalName", [".*\\@contoso.com"]),
    ("NOT_REGEX_MATCH", "userPrincipalName", [".*\\@fabrikam.com"]),
    ("Greater_Than", "employeeId", ["100"]),
    ("Greater_Than_OR_EQUALS", "employeeId", ["1234"]),
    ("Includes", "jobTitle", ["Engineer"]),
    ("ENDS_WITH", "mail", ["@contoso.com"]),
    ("&", "city", ["Paris, London, Berlin"]),
    ("!&", "city", ["Oslo, Rome"]),
]
PERSON = {
    "userPrincipalName": "ada@contoso.com",
    "mail": "ada@contoso.com",
    "department": "Sales",
    "accountEnabled": True,
    "showInAddressList": False,
    "employeeId": "1234",
    "jobTitle": "Senior Engineer",
    "city": "London",
}


def clause(operator: str, attribute: str, values: list[str]) -> dict[str, Any]:
    return {
        "operatorName": operator,
        "sourceOperandName": attribute,
        "targetOperand": {"values": values},
    }


class TestScopingFilters:
    def test_all_14_operators(self, tmp_path: Path) -> None:
        """Each operator, in Graph's underscore spelling, becomes the portal's; the user
        passes every clause."""
        scope = {"groups": [{"name": "All", "clauses": [clause(*c) for c in ALL_OPERATORS]}]}
        doc = schema_with([user_mapping(BASE_ROWS, scope)])
        imported = from_graph(doc)
        operators = [c.operator for c in imported.filters[0].clauses]
        # all 14, in the config's order (config.ScopingOperator lists them once)
        assert operators == list(get_args(ScopingOperator)) and len(operators) == 14
        result = import_file(tmp_path, doc)
        assert result.exit_code == 0, result.output
        engine = Engine(load_with(tmp_path, result.stdout))
        assert engine.scope.evaluate(PERSON).in_scope
        for flipped in ({"department": "Legal"}, {"city": "Oslo"}, {"employeeId": "99"}):
            assert not engine.scope.evaluate({**PERSON, **flipped}).in_scope

    @pytest.mark.parametrize(
        "spelling", ["NOT EQUALS", "NOT_EQUALS", "not_equals", "Not Equals", " NOT  EQUALS "]
    )
    def test_operator_spellings(self, spelling: str) -> None:
        scope = {"groups": [{"clauses": [clause(spelling, "department", ["Legal"])]}]}
        imported = from_graph(user_mapping(BASE_ROWS, scope))
        assert imported.filters == [
            ScopingFilter(
                clauses=[
                    ScopingClause(attribute="department", operator="NOT EQUALS", value="Legal")
                ]
            )
        ]

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            (clause("STARTS_WITH", "department", ["S"]), "unknown operatorName 'STARTS_WITH'"),
            (clause("EQUALS", "department", []), "EQUALS needs exactly one value"),
            (clause("EQUALS", "department", ["a", "b"]), "got 2: a bulkprov clause"),
            (clause("IS_NULL", "department", ["x"]), "IS NULL takes no value"),
            ({"operatorName": "EQUALS", "targetOperand": {"values": ["x"]}}, "sourceOperandName"),
        ],
    )
    def test_clauses_bulkprov_cannot_read_are_refused(
        self, bad: dict[str, Any], message: str
    ) -> None:
        scope = {"groups": [{"name": "F", "clauses": [clause("IS_NOT_NULL", "mail", []), bad]}]}
        with pytest.raises(ConfigError) as info:
            from_graph(schema_with([user_mapping(BASE_ROWS, scope)]))
        assert message in str(info.value)
        assert info.value.key == (
            "synchronizationRules[0].objectMappings[0].scope.groups[0].clauses[1]"
        )

    def test_group_sets_are_multiplied_out(self) -> None:
        """(A or B) and C: each set of groups must hold."""
        scope = {
            "groups": [
                {"name": "A", "clauses": [clause("EQUALS", "department", ["Sales"])]},
                {"name": "B", "clauses": [clause("EQUALS", "department", ["Legal"])]},
            ],
            "inputFilterGroups": [],
            "categoryFilterGroups": [
                {"name": "C", "clauses": [clause("IS_TRUE", "accountEnabled", [])]}
            ],
        }
        imported = from_graph(user_mapping(BASE_ROWS, scope))
        assert [(f.name, [c.attribute for c in f.clauses]) for f in imported.filters] == [
            ("A + C", ["department", "accountEnabled"]),
            ("B + C", ["department", "accountEnabled"]),
        ]

    def test_input_filter_groups_come_with_a_warning(self) -> None:
        """inputFilterGroups do not deprovision in Entra; bulkprov's filters do: say so."""
        scope = {"inputFilterGroups": [{"clauses": [clause("EQUALS", "department", ["Sales"])]}]}
        imported = from_graph(user_mapping(BASE_ROWS, scope))
        assert len(imported.filters) == 1
        assert any("does not deprovision" in w for w in imported.warnings)


class TestAttributeMappings:
    def rows_of(self, *rows: dict[str, Any]) -> list[AttributeMapping]:
        return from_graph(schema_with([user_mapping([*BASE_ROWS, *rows])])).mappings[2:]

    def test_flow_types(self) -> None:
        always, creation = self.rows_of(
            attr("title", "jobTitle", flowType="Always"),
            attr("nickName", "mailNickname", flowType="ObjectAddOnly"),
        )
        assert always.apply == "always" and creation.apply == "creation"

    @pytest.mark.parametrize("flow", ["MultiValueAddOnly", "ValueAddOnly", "AttributeAddOnly"])
    def test_flow_types_bulkprov_cannot_honour_are_refused_naming_the_attribute(
        self, flow: str
    ) -> None:
        """Never a silent apply = "creation" (what import did before)."""
        with pytest.raises(ConfigError) as info:
            self.rows_of(attr("emails", "otherMails", flowType=flow))
        assert f"flowType {flow}" in str(info.value)
        assert info.value.key == (
            "synchronizationRules[0].objectMappings[0].attributeMappings[2] (emails)"
        )

    def test_unknown_flow_type(self) -> None:
        with pytest.raises(ConfigError, match="unknown flowType 'Sometimes'"):
            self.rows_of(attr("title", "jobTitle", flowType="Sometimes"))

    def test_flow_always_is_a_warning(self) -> None:
        doc = user_mapping([*BASE_ROWS, attr("title", "jobTitle", flowBehavior="FlowAlways")])
        imported = from_graph(doc)
        assert imported.mappings[2].apply == "always"
        assert any("(title): flowBehavior FlowAlways" in w for w in imported.warnings)

    @pytest.mark.parametrize("priority", ["abc", "1", -1, 1.5, True, 2**31])
    def test_matching_priority_is_validated(self, priority: Any) -> None:
        """ "abc" gave a traceback (int("abc")); now an error naming the attribute."""
        with pytest.raises(ConfigError) as info:
            self.rows_of(attr("externalId", "id", priority))
        assert "matchingPriority must be a whole number" in str(info.value)
        assert "(externalId)" in str(info.value)

    def test_matching_priority_zero_and_null_mean_not_matching(self) -> None:
        zero, null = self.rows_of(attr("title", "jobTitle", 0), attr("nickName", "x", None))
        assert zero.matching_precedence is None and null.matching_precedence is None

    def test_constant_values_are_kept(self) -> None:
        """A Constant's value is its name; without a name, its expression ("" before)."""
        named, quoted, number, escaped = self.rows_of(
            {"targetAttributeName": "a", "source": {"type": "Constant", "name": "Sales"}},
            {"targetAttributeName": "b", "source": {"type": "Constant", "expression": '"HQ"'}},
            {"targetAttributeName": "c", "source": {"type": "Constant", "expression": "12"}},
            {
                "targetAttributeName": "d",
                "source": {"type": "Constant", "expression": '"say \\"hi\\" \\\\ bye"'},
            },
        )
        assert (named.constant, quoted.constant, number.constant) == ("Sales", "HQ", "12")
        assert escaped.constant == 'say "hi" \\ bye'

    def test_a_source_without_type_is_an_attribute(self) -> None:
        """Graph: attributeMappingSource.type "Default is Attribute"."""
        (row,) = self.rows_of({"targetAttributeName": "title", "source": {"name": "jobTitle"}})
        assert row.source == "jobTitle"

    @pytest.mark.parametrize(
        ("row", "message"),
        [
            ({"source": None}, "needs a targetAttributeName"),
            (
                {"targetAttributeName": "a", "source": {"type": "Function"}},
                "needs its 'expression'",
            ),
            ({"targetAttributeName": "a", "source": {"type": "Magic"}}, "unknown source type"),
            ({"targetAttributeName": "a", "source": None, "defaultValue": 5}, "defaultValue"),
            (
                {"targetAttributeName": "a", "source": {"type": "Constant", "expression": "[x]"}},
                "must be a string or a number",
            ),
        ],
    )
    def test_malformed_rows(self, row: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            self.rows_of(row)


class TestPickingObjectMappings:
    GROUPS: ClassVar[dict[str, Any]] = {
        "attributeMappings": [
            attr("displayName", "displayName", 1),
            attr("externalId", "objectId"),
            attr("members", "members"),
        ],
        "enabled": True,
        "name": "Provision Microsoft Entra ID Groups",
        "scope": None,
        "sourceObjectName": "Group",
        "targetObjectName": "Group",
    }

    def test_user_and_group_mappings_are_taken_and_others_listed(self) -> None:
        contacts = {**user_mapping([attr("userName", "mail", 1)]), "name": "Contacts"}
        contacts["sourceObjectName"] = "Contact"
        doc = schema_with([contacts, self.GROUPS, user_mapping(BASE_ROWS)])
        imported = from_graph(doc)
        assert [m.target for m in imported.mappings] == ["userName", "displayName"]
        assert imported.groups is True
        assert imported.notes[0].startswith("user mapping: 'Provision Microsoft Entra ID Users'")
        assert any(n.startswith("groups: the group mapping 'Provision") for n in imported.notes)
        assert any(n.startswith("not imported: 'Contacts' (Contact → urn:") for n in imported.notes)
        assert imported.warnings == ()

    def test_a_disabled_group_mapping_turns_groups_off(self) -> None:
        doc = schema_with([user_mapping(BASE_ROWS), {**self.GROUPS, "enabled": False}])
        imported = from_graph(doc)
        assert imported.groups is False
        assert any("is disabled: set [groups] enabled = false" in n for n in imported.notes)

    def test_group_rows_bulkprov_does_not_send_are_warnings(self) -> None:
        rows = [*self.GROUPS["attributeMappings"], attr("description", "description")]
        doc = schema_with([user_mapping(BASE_ROWS), {**self.GROUPS, "attributeMappings": rows}])
        imported = from_graph(doc)
        assert any("group attribute description ← [description]" in w for w in imported.warnings)

    def test_group_scoping_filters_are_refused_unless_groups_are_left_out(self) -> None:
        scope = {"groups": [{"clauses": [clause("EQUALS", "displayName", ["Zoom users"])]}]}
        doc = schema_with([user_mapping(BASE_ROWS), {**self.GROUPS, "scope": scope}])
        with pytest.raises(ConfigError, match="cannot apply to groups"):
            from_graph(doc)
        imported = from_graph(doc, groups=False)
        assert imported.groups is False
        assert any(
            "not imported: 'Provision Microsoft Entra ID Groups'" in n for n in imported.notes
        )

    def test_choosing_the_user_mapping_by_name(self) -> None:
        second = {**user_mapping([attr("userName", "mail", 1)]), "name": "Second"}
        doc = schema_with([user_mapping(BASE_ROWS), second])
        assert len(from_graph(doc).mappings) == 2  # the first enabled one
        assert any("not imported: 'Second'" in n for n in from_graph(doc).notes)
        chosen = from_graph(doc, object_mapping="Second")
        assert [m.source for m in chosen.mappings] == ["mail"]
        with pytest.raises(ConfigError, match="no objectMapping is named 'Third'"):
            from_graph(doc, object_mapping="Third")

    def test_no_enabled_user_mapping(self) -> None:
        doc = schema_with([{**user_mapping(BASE_ROWS), "enabled": False}, self.GROUPS])
        with pytest.raises(ConfigError, match="no enabled objectMapping of User objects"):
            from_graph(doc)

    def test_flow_types_of_the_object_mapping_are_said(self) -> None:
        doc = schema_with([user_mapping(BASE_ROWS, flowTypes="Add, Update")])
        (warning,) = from_graph(doc).warnings
        assert "leaves out Delete" in warning

    def test_the_whole_schema_used_to_be_rejected(self, tmp_path: Path) -> None:
        """Before: 'expected a list of attributeMapping objects or {attributeMappings}'."""
        result = import_file(tmp_path, schema_with([user_mapping(BASE_ROWS), self.GROUPS]))
        assert result.exit_code == 0, result.output
        assert "2 mappings checked" in result.stderr


class TestRoundTrips:
    FILTERS: ClassVar[list[ScopingFilter]] = [
        ScopingFilter(
            name="Sales",
            clauses=[
                ScopingClause(attribute="department", operator="EQUALS", value="Sales"),
                ScopingClause(attribute="jobTitle", operator="IS NOT NULL"),
            ],
        ),
        ScopingFilter(
            clauses=[ScopingClause(attribute="mail", operator="REGEX MATCH", value=r"\d+@x\.y$")]
        ),
    ]
    MAPPINGS: ClassVar[list[AttributeMapping]] = [
        AttributeMapping(target="userName", source="userPrincipalName", matching_precedence=1),
        AttributeMapping(target="externalId", source="id", matching_precedence=2),
        AttributeMapping(target="title", constant='He said "hi" \\ é'),
        AttributeMapping(target="nickName", expression="Left([mail], 3)", apply="creation"),
        AttributeMapping(target="locale", type="none", default="en-US"),
        AttributeMapping(target="active", expression='Switch([IsSoftDeleted], , "False", "True")'),
    ]

    @pytest.mark.parametrize("shape", ["object", "schema", "schema-no-groups"])
    def test_import_export_import_is_identical(self, shape: str) -> None:
        start = Imported(self.MAPPINGS, self.FILTERS, None if shape == "object" else True)
        if shape == "object":
            exported = to_object_mapping(start.mappings, start.filters)
        else:
            groups = shape == "schema"
            start = Imported(self.MAPPINGS, self.FILTERS, groups)
            exported = to_schema(start.mappings, start.filters, groups=groups)
        first = from_graph(json.loads(json.dumps(exported)))
        assert first.same_table(start)
        again = (
            to_object_mapping(first.mappings, first.filters)
            if shape == "object"
            else to_schema(first.mappings, first.filters, groups=bool(first.groups))
        )
        assert again == exported
        assert from_graph(again).same_table(first)

    def test_microsofts_example_round_trips(self) -> None:
        first = from_graph(sample("graph-objectmapping-example.json"))
        second = from_graph(to_object_mapping(first.mappings, first.filters))
        assert second.mappings == first.mappings
        toml = from_toml(to_toml(first.mappings, first.filters))
        assert toml.mappings == first.mappings

    def test_toml_round_trip_with_filters(self) -> None:
        text = to_toml(self.MAPPINGS, self.FILTERS)
        back = from_toml(text)
        assert back.mappings == self.MAPPINGS and back.filters == self.FILTERS
        assert to_toml(back.mappings, back.filters) == text

    def test_the_command_line_round_trip(self, tmp_path: Path) -> None:
        """export (each shape) → import gives tables that load to the same config."""
        filters = (
            '[[scope.filters]]\nname = "Sales"\n'
            'clauses = [{ attribute = "department", operator = "EQUALS", value = "Sales" }]'
        )
        text = STARTER_TOML.replace("# [[scope.filters]]", filters + "\n# [[scope.filters]]", 1)
        config = tmp_path / "c.toml"
        config.write_text(text, encoding="utf-8")
        cfg = load_config(config)
        for fmt, suffix in (("graph-json", "json"), ("graph-schema", "json"), ("toml", "toml")):
            exported = run("mapping", "export", "-c", str(config), "--format", fmt)
            assert exported.exit_code == 0, exported.output
            path = tmp_path / f"export-{fmt}.{suffix}"
            path.write_text(exported.stdout, encoding="utf-8")
            imported = run("mapping", "import", str(path))
            assert imported.exit_code == 0, imported.output
            again = load_with(tmp_path, imported.stdout)
            assert again.mappings == cfg.mappings, fmt
            assert again.scope.filters == cfg.scope.filters, fmt
            if fmt == "graph-schema":
                assert f"groups: the group mapping '{GROUP_MAPPING_NAME}'" in imported.stderr

    def test_exported_schema_shape(self) -> None:
        doc = to_schema(self.MAPPINGS, self.FILTERS, groups=False)
        (rule,) = doc["synchronizationRules"]
        users, groups = rule["objectMappings"]
        assert users["sourceObjectName"] == "User" and groups["sourceObjectName"] == "Group"
        assert groups["enabled"] is False
        assert users["scope"]["groups"][0]["clauses"][1] == {
            "operatorName": "IS NOT NULL",
            "sourceOperandName": "jobTitle",
            "targetOperand": {"values": []},
        }
        by_target = {m["targetAttributeName"]: m for m in users["attributeMappings"]}
        assert by_target["title"]["source"] == {
            "expression": '"He said \\"hi\\" \\\\ é"',
            "name": 'He said "hi" \\ é',
            "parameters": [],
            "type": "Constant",
        }
        assert by_target["nickName"]["flowType"] == "ObjectAddOnly"
        assert by_target["nickName"]["source"]["name"] == "Left"
        assert by_target["locale"]["source"] is None


class TestValidationAsAtLoad:
    def test_errors_name_the_row_and_its_target(self, tmp_path: Path) -> None:
        rows = [*BASE_ROWS, attr("title", "jobTitle")]
        rows[2] = {**rows[2], "source": {"type": "Function", "expression": 'Left([mail], "x")'}}
        result = import_file(tmp_path, user_mapping(rows))
        assert result.exit_code == 2
        assert "mappings[2].expression" in result.stderr
        assert "(mappings[2] is the mapping of 'title')" in result.stderr

    def test_a_bad_scoping_regex_fails_as_at_load(self, tmp_path: Path) -> None:
        scope = {"groups": [{"clauses": [clause("REGEX_MATCH", "mail", ["ab["])]}]}
        result = import_file(tmp_path, user_mapping(BASE_ROWS, scope))
        assert result.exit_code == 2
        assert "scope.filters[0].clauses[0]: invalid regular expression" in result.stderr

    def test_a_deeply_nested_expression_is_a_clean_error(self, tmp_path: Path) -> None:
        """330 nested calls used to print a RecursionError traceback."""
        deep = "ToLower(" * 330 + "[mail]" + ")" * 330
        rows = [
            *BASE_ROWS,
            {"targetAttributeName": "t", "source": {"type": "Function", "expression": deep}},
        ]
        result = import_file(tmp_path, user_mapping(rows))
        assert result.exit_code == 2
        assert "nested more than 100 deep" in result.stderr
        assert "Traceback" not in result.output

    def test_duplicate_targets_and_priorities(self, tmp_path: Path) -> None:
        rows = [*BASE_ROWS, attr("externalId", "id", 1)]
        result = import_file(tmp_path, user_mapping(rows))
        assert result.exit_code == 2
        assert "matching precedence 1 is also used by mappings[0]" in result.stderr

    def test_not_a_mapping_document(self, tmp_path: Path) -> None:
        result = import_file(tmp_path, {"value": []})
        assert result.exit_code == 2
        assert "expected a synchronizationSchema" in result.stderr
        assert str(tmp_path / "in.json") in result.stderr


def test_mapping_test_expression_nested_too_deep_is_a_clean_error(tmp_path: Path) -> None:
    """`bulkprov mapping test -e` printed a RecursionError traceback for 330 nested calls."""
    config = tmp_path / "c.toml"
    config.write_text(STARTER_TOML, encoding="utf-8")
    user = tmp_path / "u.json"
    user.write_text(json.dumps({"mail": "a@b.c"}), encoding="utf-8")
    deep = "ToLower(" * 330 + "[mail]" + ")" * 330
    result = run("mapping", "test", "-c", str(config), "--user-json", str(user), "-e", deep)
    assert result.exit_code == 2
    assert "nested more than 100 deep" in result.stderr


def test_schema_documents_are_not_changed_by_import() -> None:
    doc = sample("graph-objectmapping-example.json")
    before = copy.deepcopy(doc)
    from_graph(doc)
    assert doc == before


def test_all_errors_names_every_attribute_mapping_bulkprov_cannot_express() -> None:
    """`from_graph(all_errors=True)` (bulkprov migrate) reads and compiles every row before
    failing: each row bulkprov cannot express is named, not only the first."""
    from bulkprov.errors import ConfigError
    from bulkprov.sim.graph.synchronization import attribute_mapping, zoom_job_schema

    def fn(expression: str) -> dict:
        return {"expression": expression, "name": "", "parameters": [], "type": "Function"}

    extra = [
        attribute_mapping(
            'roles[primary eq "True"].value',
            {"expression": "[x]", "name": "x", "parameters": [], "type": "Attribute"},
            flow_type="MultiValueAddOnly",
        ),
        attribute_mapping("nickName", fn("Soundex([givenName])")),
        attribute_mapping("title", fn('Join(",", [jobTitle]')),
    ]
    doc = zoom_job_schema(extra_mappings=extra)
    with pytest.raises(ConfigError) as first:
        from_graph(doc)  # as `mapping import` does: the first problem only
    assert "MultiValueAddOnly" in str(first.value) and "nickName" not in str(first.value)
    with pytest.raises(ConfigError) as every:
        from_graph(doc, all_errors=True)
    text = str(every.value)
    assert text.startswith("3 attribute mappings cannot be expressed in bulkprov")
    assert (
        'attributeMappings[6] (roles[primary eq "True"].value): flowType MultiValueAddOnly' in text
    )
    assert "attributeMappings[7] (nickName)" in text and "Soundex" in text
    assert "attributeMappings[8] (title)" in text
    assert from_graph(zoom_job_schema(), all_errors=True).same_table(from_graph(zoom_job_schema()))
