"""to_frame on answers written out by hand: no gateway needed."""

import unittest

from gateway_client import to_frame

try:
    import pandas  # noqa: F401
except ImportError:  # pragma: no cover
    pandas = None


def answer(**extra):
    a = {
        "query_id": "qry_1", "grant_id": "grt_1", "grade": "core", "cached": False,
        "columns": [{"name": "province", "type": "VARCHAR"}, {"name": "n", "type": "BIGINT"},
                    {"name": "mean_age", "type": "DOUBLE"}],
        "rows": [["Anhui", 120, 41.5], ["Beijing", 98, 39.0]],
        "privacy": {"mechanism": "laplace", "epsilon": 0.1, "delta": 0, "k": 10,
                    "columns": {"n": {"noise_scale": 10, "ci95": 30.0}, "mean_age": {"noise_scale": 1, "ci95": 2.5}}},
        "budget": {"epsilon_spent": 0.1, "epsilon_remaining": 2.9},
    }
    a.update(extra)
    return a


@unittest.skipIf(pandas is None, "pandas is not installed")
class FrameTest(unittest.TestCase):
    def test_intervals_from_ci95(self):
        df = to_frame(answer())
        self.assertEqual(list(df.columns), ["province", "n", "n_low", "n_high", "mean_age", "mean_age_low", "mean_age_high"])
        self.assertEqual(str(df["n"].dtype), "int64")
        self.assertEqual(df["n_low"].tolist(), [90.0, 68.0])
        self.assertEqual(df["mean_age_high"].tolist(), [44.0, 41.5])
        self.assertEqual(df.attrs["intervals"], "ci95")
        self.assertEqual(df.attrs["budget"]["epsilon_remaining"], 2.9)
        self.assertEqual(df.attrs["privacy"]["epsilon"], 0.1)

    def test_intervals_from_server(self):
        df = to_frame(answer(intervals=[[None, [100, 140], [40, 43]], [None, [80, 117], [37, 41]]]))
        self.assertEqual(df["n_low"].tolist(), [100.0, 80.0])
        self.assertEqual(df["mean_age_high"].tolist(), [43.0, 41.0])
        self.assertEqual(df.attrs["intervals"], "server")

    def test_empty_and_null(self):
        df = to_frame(answer(rows=None))
        self.assertEqual(len(df), 0)
        self.assertIn("n_low", df.columns)
        df = to_frame(answer(rows=[[None, 5, None]]))
        self.assertEqual(str(df["n"].dtype), "int64")
        self.assertTrue(df["mean_age_low"].isna().all())

    def test_types(self):
        df = to_frame({
            "columns": [{"name": "d", "type": "DATE"}, {"name": "flag", "type": "BOOLEAN"}, {"name": "n", "type": "BIGINT"}],
            "rows": [["2024-01-02", True, None], ["2024-02-03", False, 7]],
            "privacy": {"columns": {"n": {"ci95": 1.0}}},
        })
        self.assertEqual(str(df["d"].dtype), "datetime64[ns]")
        self.assertEqual(str(df["flag"].dtype), "bool")
        self.assertEqual(str(df["n"].dtype), "Int64")


if __name__ == "__main__":
    unittest.main()
