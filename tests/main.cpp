// The doctest main every suite links, with two checks for all of them: a
// test case must leave as many descriptors open as it found (counted in
// /proc/self/fd before and after), and no process it started may outlive it
// (the run is a child subreaper, so a process whose parent exited, a
// daemon's double fork, is found too: tests/children.hpp). A leak fails the
// run, naming the case; a process left running is killed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <dirent.h>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "children.hpp"

namespace {

long open_fds() {
  long n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the DIR's own descriptor
}

std::vector<std::string> g_leaks;

struct LeakCheck final : doctest::IReporter {
  explicit LeakCheck(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData& tc) override {
    name_ = tc.m_name;
    before_ = open_fds();
    children_ = lev::test::child_pids();
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {
    // A descriptor may be closed by another thread a moment later (a loop's
    // eventfd goes with the last waker's reference): wait up to 1 s.
    long after = open_fds();
    for (int i = 0; i < 500 && after != before_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      after = open_fds();
    }
    if (after != before_)
      g_leaks.push_back("fd leak: " + name_ + ": " + std::to_string(before_) +
                        " descriptors before, " + std::to_string(after) + " after");
    // A child may be exiting still (killed at the end of the case): 1 s.
    for (const std::string& p : lev::test::reap_leftovers(children_, std::chrono::seconds(1)))
      g_leaks.push_back("process leak: " + name_ + ": process " + p +
                        " outlived the test case (killed)");
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}

 private:
  std::string name_;
  long before_ = 0;
  std::vector<pid_t> children_;
};

}  // namespace

REGISTER_LISTENER("leak_check", 1, LeakCheck);

int main(int argc, char** argv) {
  if (!lev::test::become_subreaper()) std::perror("tests: PR_SET_CHILD_SUBREAPER");
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  for (const std::string& leak : g_leaks) std::fprintf(stderr, "%s\n", leak.c_str());
  return g_leaks.empty() ? rc : 1;
}
