"""Native unit tests of the algorithm: `python3 -m unittest` (no host needed)."""

import unittest

from weighted import SmoothWeighted, parse_config


def picks(rr, candidates, n):
    return [rr.rank(candidates, len(candidates))[0] for _ in range(n)]


class SmoothWeightedTest(unittest.TestCase):
    def test_three_to_one_is_interleaved_like_nginx(self):
        rr = SmoothWeighted()
        rr.set_endpoints({0: 3, 1: 1})
        self.assertEqual(picks(rr, [0, 1], 8), [0, 0, 1, 0, 0, 0, 1, 0])

    def test_every_window_of_total_weight_is_exact(self):
        rr = SmoothWeighted()
        rr.set_endpoints({0: 5, 1: 2, 2: 1})
        window = picks(rr, [0, 1, 2], 8)
        self.assertEqual([window.count(i) for i in range(3)], [5, 2, 1])

    def test_ranking_lists_every_candidate_winner_first(self):
        rr = SmoothWeighted()
        rr.set_endpoints({0: 1, 1: 1, 2: 1})
        self.assertEqual(sorted(rr.rank([2, 0, 1], 3)), [0, 1, 2])
        self.assertEqual(len(rr.rank([0, 1, 2], 1)), 1)

    def test_weight_zero_takes_the_default(self):
        rr = SmoothWeighted(default_weight=2)
        rr.set_endpoints({0: 0, 1: 2})
        self.assertEqual(picks(rr, [0, 1], 4).count(0), 2)

    def test_config_errors_name_the_key(self):
        self.assertEqual(parse_config("{}"), 1)
        self.assertEqual(parse_config('{"default_weight": 4}'), 4)
        with self.assertRaisesRegex(ValueError, "default_weight"):
            parse_config('{"default_weight": 0}')
        with self.assertRaisesRegex(ValueError, "unknown key"):
            parse_config('{"weight": 1}')


if __name__ == "__main__":
    unittest.main()
