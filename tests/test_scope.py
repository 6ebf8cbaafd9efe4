"""Scoping filters: the 14 operators, AND/OR, null rules, reasons and compile-time errors."""

from __future__ import annotations

from typing import Any

import pytest

from bulkprov.config import ScopingClause, ScopingFilter
from bulkprov.errors import MappingError, UserDataError
from bulkprov.scope import ScopeDecision, compile_scope

USER: dict[str, Any] = {
    "id": "u-1",
    "userPrincipalName": "ada@domain.com",
    "department": "Sales",
    "jobTitle": "Account Executive",
    "employeeId": "1234567",
    "accountEnabled": True,
    "showInAddressList": False,
    "city": "",
    "officeLocation": None,
    "proxyAddresses": ["SMTP:ada@domain.com"],
    "extension_abc_level": 7,
    "extension_abc_flag": "TRUE",
    "extension_abc_multi": ["a", "b"],
    "onPremisesExtensionAttributes": {"extensionAttribute1": "Contractor"},
}


def clause(attribute: str, operator: str, value: str | None = None) -> ScopingClause:
    return ScopingClause.model_validate(
        {"attribute": attribute, "operator": operator, "value": value}
    )


def decide(*clauses: ScopingClause, user: dict[str, Any] = USER) -> bool:
    scope = compile_scope([ScopingFilter(name="F", clauses=list(clauses))])
    return scope.evaluate(user).in_scope


OPERATOR_CASES = [
    # (attribute, operator, value, expected)
    ("department", "EQUALS", "Sales", True),
    ("department", "EQUALS", "sales", False),  # case-sensitive (SCOPING)
    ("department", "NOT EQUALS", "sales", True),
    ("department", "NOT EQUALS", "Sales", False),
    ("accountEnabled", "EQUALS", "true", True),  # a Graph boolean, any case
    ("accountEnabled", "IS TRUE", None, True),
    ("accountEnabled", "IS FALSE", None, False),
    ("showInAddressList", "IS FALSE", None, True),
    ("showInAddressList", "IS TRUE", None, False),
    ("extension_abc_flag", "IS TRUE", None, True),  # the string "TRUE"
    ("department", "IS TRUE", None, False),
    ("city", "IS NULL", None, True),  # empty counts as null
    ("officeLocation", "IS NULL", None, True),
    ("missing", "IS NULL", None, True),
    ("department", "IS NULL", None, False),
    ("department", "IS NOT NULL", None, True),
    ("city", "IS NOT NULL", None, False),
    ("userPrincipalName", "REGEX MATCH", r".*\@domain.com", True),  # SCOPING example
    ("userPrincipalName", "NOT REGEX MATCH", r".*\@domain.com", False),  # SCOPING example
    ("userPrincipalName", "REGEX MATCH", r"@other\.com$", False),
    ("userPrincipalName", "NOT REGEX MATCH", r"@other\.com$", True),
    ("employeeId", "REGEX MATCH", "(1[0-9][0-9][0-9][0-9][0-9][0-9])", True),  # SCOPING example
    ("employeeId", "REGEX MATCH", "^(?<lead>1)\\d{6}$", True),  # .NET named group
    ("department", "REGEX MATCH", "^sales$", False),  # case-sensitive
    ("department", "REGEX MATCH", "(?i)^sales$", True),
    ("department", "REGEX MATCH", "ale", True),  # a search, not a full match
    ("employeeId", "Greater_Than", "1234566", True),
    ("employeeId", "Greater_Than", "1234567", False),
    ("employeeId", "Greater_Than_OR_EQUALS", "1234567", True),
    ("employeeId", "Greater_Than_OR_EQUALS", "1234568", False),
    ("extension_abc_level", "Greater_Than", "6", True),  # a JSON integer
    ("department", "Greater_Than", "0", False),  # not an integer on the user: false
    ("accountEnabled", "Greater_Than", "0", False),  # a boolean is not an integer
    ("jobTitle", "Includes", "Exec", True),
    ("jobTitle", "Includes", "exec", False),  # case-sensitive (String.Contains)
    ("userPrincipalName", "ENDS_WITH", "@domain.com", True),
    ("userPrincipalName", "ENDS_WITH", "@DOMAIN.COM", False),
    ("department", "&", "Sales,Marketing", True),  # the value occurs in the input string
    ("department", "&", "Marketing,Support", False),
    ("department", "!&", "Marketing,Support", True),
    ("department", "!&", "Sales,Marketing", False),
    ("extensionAttribute1", "EQUALS", "Contractor", True),  # on-premises extension attribute
    ("objectId", "EQUALS", "u-1", True),  # Graph id
]


@pytest.mark.parametrize(
    ("attribute", "operator", "value", "expected"),
    OPERATOR_CASES,
    ids=[f"{a} {o} {v!r}" for a, o, v, _ in OPERATOR_CASES],
)
def test_operator(attribute: str, operator: str, value: str | None, expected: bool) -> None:
    """Each operator follows SCOPING's documented semantics."""
    assert decide(clause(attribute, operator, value)) is expected


def test_all_fourteen_operators_are_covered() -> None:
    """The operator table above exercises every operator config.py allows."""
    from typing import get_args

    from bulkprov.config import ScopingOperator

    assert {op for _, op, _, _ in OPERATOR_CASES} == set(get_args(ScopingOperator))
    assert len(get_args(ScopingOperator)) == 14


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("EQUALS", "x"),
        ("NOT EQUALS", "x"),
        ("REGEX MATCH", ".*"),
        ("NOT REGEX MATCH", "x"),
        ("Greater_Than", "0"),
        ("Greater_Than_OR_EQUALS", "0"),
        ("Includes", ""),
        ("ENDS_WITH", ""),
        ("&", "abc"),
        ("!&", "abc"),
        ("IS TRUE", None),
        ("IS FALSE", None),
        ("IS NOT NULL", None),
    ],
)
@pytest.mark.parametrize("empty", [None, ""], ids=["null", "empty"])
def test_null_or_empty_is_false(operator: str, value: str | None, empty: str | None) -> None:
    """Null or empty values make every operator false, except IS NULL (SCOPING)."""
    assert decide(clause("city", operator, value), user={"city": empty}) is False


def test_is_null_is_true_for_null_and_empty() -> None:
    """IS NULL is the documented exception to the null rule."""
    values: tuple[Any, ...] = (None, "", [])
    for value in values:
        assert decide(clause("city", "IS NULL"), user={"city": value})
    assert decide(clause("city", "IS NULL"), user={})


def test_and_within_a_filter_or_across_filters() -> None:
    """Clauses AND together within a filter; filters OR together."""
    sales_exec = ScopingFilter(
        name="Sales execs",
        clauses=[clause("department", "EQUALS", "Sales"), clause("jobTitle", "Includes", "Exec")],
    )
    engineers = ScopingFilter(name="Engineering", clauses=[clause("department", "EQUALS", "Eng")])
    scope = compile_scope([sales_exec, engineers])
    assert scope.evaluate(USER).in_scope
    assert not scope.evaluate({**USER, "jobTitle": "Intern"}).in_scope
    assert scope.evaluate({**USER, "jobTitle": "Intern", "department": "Eng"}).in_scope
    assert not scope.evaluate({}).in_scope


def test_no_filters_means_everyone() -> None:
    """Without scoping filters every user is in scope."""
    scope = compile_scope([])
    decision = scope.evaluate({})
    assert decision == ScopeDecision(True, "no scoping filters")
    assert scope.source_attributes == frozenset()
    assert len(scope) == 0


class TestReasons:
    def test_false_clause_is_named(self) -> None:
        """An out-of-scope decision names the filter and the clause that was false."""
        scope = compile_scope(
            [
                ScopingFilter(
                    name="Sales",
                    clauses=[
                        clause("jobTitle", "IS NOT NULL"),
                        clause("department", "EQUALS", "Sales"),
                    ],
                )
            ]
        )
        decision = scope.evaluate({**USER, "department": "HR"})
        assert decision == ScopeDecision(
            False, 'filter "Sales" clause department EQUALS "Sales" is false'
        )
        assert scope.evaluate(USER) == ScopeDecision(
            True, 'filter "Sales" matched: jobTitle IS NOT NULL AND department EQUALS "Sales"'
        )

    def test_every_failed_filter_is_named(self) -> None:
        """With several filters, each one's false clause is listed; unnamed ones by number."""
        scope = compile_scope(
            [
                ScopingFilter(clauses=[clause("department", "EQUALS", "Eng")]),
                ScopingFilter(name='Q"uote', clauses=[clause("city", "IS NOT NULL")]),
            ]
        )
        first = scope.evaluate(USER)
        assert first.reason == (
            'no scoping filter matched: filter #1 clause department EQUALS "Eng" is false; '
            'filter "Q\\"uote" clause city IS NOT NULL is false'
        )
        assert scope.evaluate(USER) is first  # decisions are cached and shared


class TestCompileErrors:
    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            (clause("appRoleAssignments", "IS NOT NULL"), "app role assignments are not supported"),
            (clause("userType", "EQUALS", "Member"), "userType is not supported"),
            (clause("manager", "IS NOT NULL"), "manager"),
            (clause("proxyAddresses", "Includes", "x"), "multi-valued"),
            (clause("createdDateTime", "IS NOT NULL"), "date attributes are not supported"),
            (clause("IsSoftDeleted", "IS TRUE"), "computed during provisioning"),
            (clause("department", "EQUALS", None), "EQUALS needs a value"),
            (clause("department", "REGEX MATCH", None), "REGEX MATCH needs a value"),
            (clause("employeeId", "Greater_Than", "ten"), "Greater_Than needs an integer"),
            (clause("employeeId", "Greater_Than_OR_EQUALS", "1.5"), "needs an integer"),
            (clause("department", "REGEX MATCH", "(unclosed"), "invalid regular expression"),
            (clause("department", "IS NULL", "x"), "IS NULL takes no value"),
            (clause("bad name", "IS NULL"), "invalid attribute name"),
        ],
    )
    def test_rejected_when_compiled(self, bad: ScopingClause, message: str) -> None:
        """Bad clauses fail at config load, naming scope.filters[i].clauses[j]."""
        filters = [
            ScopingFilter(clauses=[clause("department", "IS NOT NULL")]),
            ScopingFilter(clauses=[clause("jobTitle", "IS NOT NULL"), bad]),
        ]
        with pytest.raises(MappingError) as info:
            compile_scope(filters, config_path="c.toml")
        assert info.value.key == "scope.filters[1].clauses[1]"
        assert message in str(info.value)
        assert str(info.value).startswith("c.toml: scope.filters[1].clauses[1]: ")

    def test_regex_error_shows_a_caret(self) -> None:
        """An invalid pattern's message points at the offending position."""
        with pytest.raises(MappingError) as info:
            compile_scope([ScopingFilter(clauses=[clause("department", "REGEX MATCH", "ab[")])])
        assert str(info.value).endswith("    ab[\n      ^")


def test_multi_valued_at_run_time_fails_that_user() -> None:
    """An attribute that turns out multi-valued raises UserDataError for that user."""
    scope = compile_scope([ScopingFilter(clauses=[clause("extension_abc_multi", "EQUALS", "a")])])
    with pytest.raises(UserDataError, match="multi-valued"):
        scope.evaluate(USER)


def test_source_attributes() -> None:
    """$select names of the clauses' attributes (Graph names)."""
    scope = compile_scope(
        [
            ScopingFilter(clauses=[clause("department", "EQUALS", "x")]),
            ScopingFilter(
                clauses=[clause("extensionAttribute4", "IS NULL"), clause("objectId", "IS NULL")]
            ),
        ]
    )
    assert scope.source_attributes == {"department", "onPremisesExtensionAttributes", "id"}


class TestHugeIntegers:
    def test_greater_than_value_beyond_int64_is_rejected_at_load(self) -> None:
        """int() of 4,301+ digits raised ValueError from compile_scope; now a MappingError."""
        for value in ("9" * 5000, "9223372036854775808"):
            with pytest.raises(MappingError, match="64-bit integer"):
                compile_scope(
                    [ScopingFilter(clauses=[clause("employeeId", "Greater_Than", value)])]
                )

    def test_user_value_beyond_int64_makes_the_clause_false(self) -> None:
        """A user's value that no 64-bit integer holds is not an integer: the clause is false."""
        greater = clause("employeeId", "Greater_Than", "5")
        assert decide(greater, user={**USER, "employeeId": "9223372036854775807"})
        assert not decide(greater, user={**USER, "employeeId": "9" * 5000})
        assert not decide(greater, user={**USER, "employeeId": "9223372036854775808"})


class TestRegexTimeLimit:
    @pytest.mark.parametrize("operator", ["REGEX MATCH", "NOT REGEX MATCH"])
    def test_a_backtracking_match_fails_that_user_never_puts_them_out_of_scope(
        self, operator: str
    ) -> None:
        """A match that runs out of time is a UserDataError naming the clause: an error, not
        "out of scope" (which would disable the account) nor "in scope"."""
        import time

        scope = compile_scope(
            [ScopingFilter(name="Sales", clauses=[clause("jobTitle", operator, "(a|aa)+$")])],
            regex_timeout=0.05,
        )
        start = time.perf_counter()
        with pytest.raises(UserDataError) as info:
            scope.evaluate({**USER, "jobTitle": "a" * 60 + "!"})
        assert time.perf_counter() - start < 2.0
        assert str(info.value).startswith(f'scoping filter "Sales" clause jobTitle {operator}: ')
        assert "took longer than 0.05 s" in str(info.value)
        decision = scope.evaluate({**USER, "jobTitle": "aaa"})
        assert decision.in_scope == (operator == "REGEX MATCH")

    def test_dotnet_classes_the_regex_package_knows(self) -> None:
        """Unicode property classes (.NET's \\p{Lu}) work, as they do in Entra."""
        assert decide(clause("department", "REGEX MATCH", r"^\p{Lu}\p{Ll}+$"))
        assert not decide(clause("jobTitle", "REGEX MATCH", r"^\p{Lu}+$"))
