"""Decimal strings to integer ticks and back."""
import unittest

from twisted_exchange.core.errors import ExchangeError
from twisted_exchange.core.numbers import MAX_TICKS, SCALE, format_ticks, parse_ticks


class ParseTicksTests(unittest.TestCase):
    def test_whole_and_fractional_amounts_are_exact_ticks(self):
        self.assertEqual(parse_ticks("2", "q"), 2 * SCALE)
        self.assertEqual(parse_ticks("100.5", "q"), 10050000000)
        self.assertEqual(parse_ticks("0.00000001", "q"), 1)
        self.assertEqual(parse_ticks("007.10", "q"), 710000000)

    def test_largest_amount_is_ten_to_the_twelve(self):
        self.assertEqual(parse_ticks("1000000000000", "q"), MAX_TICKS)
        with self.assertRaises(ExchangeError):
            parse_ticks("1000000000000.00000001", "q")

    def test_rejects_everything_that_is_not_a_plain_positive_decimal(self):
        for text in ["0", "0.0", "-1", "+1", "1e3", "1E3", "NaN", "nan", "inf", "Infinity",
                     "", ".5", "1.", " 1", "1 ", "1_000", "0x10", "1.000000001",
                     "\u0661", "1.\u0665", "1,5", "9" * 40]:
            with self.subTest(text=text), self.assertRaises(ExchangeError) as caught:
                parse_ticks(text, "price")
            self.assertEqual(caught.exception.code, "ERR_INVALID_ORDER")
            self.assertIn("price", caught.exception.reason)

    def test_rejects_non_strings_including_numbers_and_bools(self):
        for value in [1, 1.5, True, None, b"1", ["1"], {"1": 1}]:
            with self.subTest(value=value), self.assertRaises(ExchangeError):
                parse_ticks(value, "quantity")


class FormatTicksTests(unittest.TestCase):
    def test_canonical_form_has_no_exponent_and_no_trailing_zeros(self):
        self.assertEqual(format_ticks(2 * SCALE), "2")
        self.assertEqual(format_ticks(10050000000), "100.5")
        self.assertEqual(format_ticks(1), "0.00000001")
        self.assertEqual(format_ticks(0), "0")
        self.assertEqual(format_ticks(MAX_TICKS), "1000000000000")

    def test_parse_of_format_is_identity(self):
        for ticks in [1, 10, 123456789, SCALE, 10 * SCALE + 5, MAX_TICKS]:
            self.assertEqual(parse_ticks(format_ticks(ticks), "q"), ticks)
