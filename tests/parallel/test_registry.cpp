// The plugin names are listed once, in the registry (src/parallel/plugin.cpp);
// the spec schema offers users the same names in the same order, and every
// name the registry builds makes a plugin.
#define BOOST_TEST_MODULE plugin_registry
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "io/spec.h"
#include "parallel/plugin.h"

using namespace vit;

BOOST_AUTO_TEST_CASE(schema_offers_exactly_the_registry_names) {
  std::vector<std::string> registry;
  for (const auto& e : parallel::plugin_registry()) registry.push_back(e.name);
  std::vector<std::string> schema;
  for (const auto& f : spec_schema()) {
    if (std::string(f.path) == "plugin.name") schema = f.choices;
  }
  BOOST_TEST(schema == registry, boost::test_tools::per_element());
  for (const auto& e : parallel::plugin_registry()) {
    BOOST_TEST(std::string(e.summary).size() > 10u, e.name << " has no summary");
  }
}

BOOST_AUTO_TEST_CASE(unbuilt_plugins_are_refused_by_name) {
  const auto built = parallel::available_plugins();
  for (const auto& e : parallel::plugin_registry()) {
    const bool is_built = std::find(built.begin(), built.end(), e.name) != built.end();
    BOOST_TEST(is_built == (e.make != nullptr), e.name);
  }
}
