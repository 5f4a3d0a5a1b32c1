// The bitwise comparison shared by test_gemini (CPU) and test_gemini_gpu:
// a gemini run whose CPU AdamW overlaps the next forward (or runs on demand)
// against the synchronous finish gives the same losses, norms, evaluation,
// first gathered gradient, exported state and parameters, bit for bit.
// Outcome: any struct with those six vectors. Include after
// boost/test/unit_test.hpp.
#pragma once

namespace same_bits {

template <typename Outcome>
void check(const Outcome& out, const Outcome& ref) {
  BOOST_TEST(out.losses == ref.losses, boost::test_tools::per_element());
  BOOST_TEST(out.norms == ref.norms, boost::test_tools::per_element());
  BOOST_TEST(out.eval_losses == ref.eval_losses, boost::test_tools::per_element());
  BOOST_TEST(out.first_grads == ref.first_grads, boost::test_tools::per_element());
  BOOST_TEST(out.state == ref.state, boost::test_tools::per_element());
  BOOST_TEST(out.params == ref.params, boost::test_tools::per_element());
}

}  // namespace same_bits
