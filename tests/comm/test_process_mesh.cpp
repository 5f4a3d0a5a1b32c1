// ProcessMesh's rank mapping as a pure unit test (no MPI: the mapping is
// plain integers). Worked examples written out by hand, then the structural
// facts every layout must satisfy: the three group kinds each partition the
// world, tp groups are runs of neighbouring ranks, and coordinates round-trip.
#define BOOST_TEST_MODULE comm_process_mesh
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <set>
#include <tuple>

#include "comm/process_mesh.h"
#include "core/error.h"

using vit::comm::ProcessMesh;

BOOST_AUTO_TEST_CASE(world_8_tp_2_pp_2_by_hand) {
  // rank = (dp * pp_size + pp) * tp_size + tp; see the table in process_mesh.h.
  const ProcessMesh m(8, 5, 2, 2);
  BOOST_TEST(m.dp_size() == 2);
  BOOST_TEST(m.tp_rank() == 1);
  BOOST_TEST(m.pp_rank() == 0);
  BOOST_TEST(m.dp_rank() == 1);
  BOOST_TEST(m.tp_group() == std::vector<int>({4, 5}));
  BOOST_TEST(m.pp_group() == std::vector<int>({5, 7}));
  BOOST_TEST(m.dp_group() == std::vector<int>({1, 5}));
  BOOST_TEST(m.pp_prev() == -1);
  BOOST_TEST(m.pp_next() == 7);
  BOOST_TEST(m.is_first_stage());
  BOOST_TEST(!m.is_last_stage());

  const ProcessMesh last(8, 6, 2, 2);  // dp 1, pp 1, tp 0
  BOOST_TEST(std::vector<int>({last.dp_rank(), last.pp_rank(), last.tp_rank()}) == std::vector<int>({1, 1, 0}));
  BOOST_TEST(last.pp_prev() == 4);
  BOOST_TEST(last.pp_next() == -1);
  BOOST_TEST(last.dp_group() == std::vector<int>({2, 6}));
}

BOOST_AUTO_TEST_CASE(world_12_tp_3_pp_2_and_world_4_pp_4_by_hand) {
  const ProcessMesh a(12, 10, 3, 2);  // 10 = (1*2 + 1)*3 + 1
  BOOST_TEST(std::vector<int>({a.dp_rank(), a.pp_rank(), a.tp_rank()}) == std::vector<int>({1, 1, 1}));
  BOOST_TEST(a.tp_group() == std::vector<int>({9, 10, 11}));
  BOOST_TEST(a.pp_group() == std::vector<int>({7, 10}));
  BOOST_TEST(a.dp_group() == std::vector<int>({4, 10}));
  BOOST_TEST(a.rank_of(0, 1, 2) == 5);

  const ProcessMesh b(4, 2, 1, 4);  // pure pipeline
  BOOST_TEST(b.dp_size() == 1);
  BOOST_TEST(b.pp_rank() == 2);
  BOOST_TEST(b.pp_group() == std::vector<int>({0, 1, 2, 3}));
  BOOST_TEST(b.pp_prev() == 1);
  BOOST_TEST(b.pp_next() == 3);
  BOOST_TEST(b.tp_group() == std::vector<int>({2}));
}

BOOST_AUTO_TEST_CASE(every_layout_partitions_the_world) {
  const std::tuple<int, int, int> layouts[] = {{1, 1, 1}, {2, 1, 1}, {4, 2, 1}, {4, 1, 2}, {4, 2, 2},
                                               {6, 1, 3}, {8, 2, 2}, {12, 3, 2}, {16, 2, 4}, {16, 4, 2}};
  for (const auto& [world, tp, pp] : layouts) {
    BOOST_TEST_CONTEXT("world " << world << " tp " << tp << " pp " << pp) {
      std::set<std::vector<int>> tp_groups, pp_groups, dp_groups;
      for (int r = 0; r < world; ++r) {
        const ProcessMesh m(world, r, tp, pp);
        BOOST_TEST(m.dp_size() * m.pp_size() * m.tp_size() == world);
        BOOST_TEST(m.rank_of(m.dp_rank(), m.pp_rank(), m.tp_rank()) == r);
        // A rank sits at its own group rank in each of its groups.
        BOOST_TEST(m.tp_group()[m.tp_rank()] == r);
        BOOST_TEST(m.pp_group()[m.pp_rank()] == r);
        BOOST_TEST(m.dp_group()[m.dp_rank()] == r);
        // tp fastest: a tp group is a run of consecutive ranks.
        const std::vector<int> t = m.tp_group();
        for (size_t i = 1; i < t.size(); ++i) BOOST_TEST(t[i] == t[0] + static_cast<int>(i));
        // Pipeline neighbours point back at us.
        if (m.pp_next() != -1) BOOST_TEST(ProcessMesh(world, m.pp_next(), tp, pp).pp_prev() == r);
        BOOST_TEST((m.pp_prev() == -1) == m.is_first_stage());
        tp_groups.insert(m.tp_group());
        pp_groups.insert(m.pp_group());
        dp_groups.insert(m.dp_group());
      }
      // Each kind of group covers every rank exactly once.
      for (const auto* groups : {&tp_groups, &pp_groups, &dp_groups}) {
        std::vector<int> all;
        for (const auto& g : *groups) all.insert(all.end(), g.begin(), g.end());
        std::sort(all.begin(), all.end());
        std::vector<int> expected(world);
        for (int r = 0; r < world; ++r) expected[r] = r;
        BOOST_TEST(all == expected);
      }
      BOOST_TEST(tp_groups.size() == static_cast<size_t>(world / tp));
      BOOST_TEST(pp_groups.size() == static_cast<size_t>(world / pp));
      BOOST_TEST(dp_groups.size() == static_cast<size_t>(tp * pp));
    }
  }
}

BOOST_AUTO_TEST_CASE(impossible_layouts_are_user_errors) {
  BOOST_CHECK_THROW(ProcessMesh(6, 0, 4, 1), vit::UserError);   // 4 does not divide 6
  BOOST_CHECK_THROW(ProcessMesh(8, 0, 2, 3), vit::UserError);   // 6 does not divide 8
  BOOST_CHECK_THROW(ProcessMesh(4, 0, 0, 1), vit::UserError);
  BOOST_CHECK_THROW(ProcessMesh(4, 0, 1, -2), vit::UserError);
  BOOST_CHECK_THROW(ProcessMesh(4, 4, 1, 1), vit::Error);       // rank outside the world
  try {
    ProcessMesh(6, 0, 4, 1);
  } catch (const vit::UserError& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("plugin.tp_size") != std::string::npos);  // names the fields to fix
  }
}

BOOST_AUTO_TEST_CASE(a_mapping_only_mesh_has_no_communicators) {
  const ProcessMesh m(4, 1, 2, 1);
  BOOST_TEST(!m.has_communicators());
  BOOST_CHECK_THROW(m.tp_comm(), vit::Error);
  BOOST_CHECK_THROW(m.world_comm(), vit::Error);
  BOOST_CHECK_THROW(m.rank_of(0, 0, 2), vit::Error);
}
