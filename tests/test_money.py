"""Money is printed by one function, ``streamchat.pricing.usd``: true at any size, so a sub-cent
budget or cost never reads "$0.00" (admin pages, refusal messages, the dashboard, the chat page)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from streamchat.pricing import usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.00"),
        (Decimal("0.0000000000"), "$0.00"),
        (Decimal("0.5"), "$0.50"),
        (25, "$25.00"),
        (Decimal("0.005"), "$0.005"),  # a half-cent budget
        (Decimal("0.0001"), "$0.0001"),
        (Decimal("0.0017"), "$0.0017"),
        ("0.0000123", "$0.0000123"),
        (Decimal("0.0001234567891"), "$0.0001234568"),  # the ledger's 10 places
        (Decimal("1E-12"), "$0.000000000001"),  # smaller than the ledger: still not $0
        (Decimal("1234.5678"), "$1,234.5678"),
        (0.1 + 0.2, "$0.30"),  # a float sum prints as the decimal it stands for
        (Decimal("-0.004"), "-$0.004"),
        ("nonsense", "?"),
        (float("nan"), "?"),
    ],
)
def test_usd_is_exact_with_at_least_two_decimals(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0.00123456"), "$0.00123"),
        (Decimal("1234.5678"), "$1,234.57"),  # never below cents
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.000000001"), "$0.000000001"),
    ],
)
def test_usd_with_significant_digits_rounds_but_never_to_zero(amount, shown):
    assert usd(amount, significant=3) == shown


@pytest.mark.parametrize("amount", ["0.001", "0.0049", "0.000001", "1e-10"])
def test_no_sub_cent_amount_reads_zero(amount):
    for significant in (None, 1, 2, 3):
        assert usd(Decimal(amount), significant=significant) not in ("$0.00", "$0", "$0.0")
