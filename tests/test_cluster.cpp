// Pieces of `spartan launch` and `spartan slurm` that the CLI tests do not reach: Slurm's time
// formats, host lists, and the choice of a rank's GPU from its local rank.
#include <gtest/gtest.h>

#include <cstdlib>

#include "common/error.h"
#include "launcher/cluster.h"

namespace spartan::launcher {
namespace {

TEST(Cluster, SlurmTimeFormats) {
  EXPECT_EQ(slurm_time_seconds("30", "t"), 30 * 60);             // M
  EXPECT_EQ(slurm_time_seconds("30:15", "t"), 30 * 60 + 15);     // M:S
  EXPECT_EQ(slurm_time_seconds("4:00:00", "t"), 4 * 3600);       // H:M:S
  EXPECT_EQ(slurm_time_seconds("2-00:00:00", "t"), 2 * 86400);   // D-H:M:S
  EXPECT_EQ(slurm_time_seconds("1-6", "t"), 86400 + 6 * 3600);   // D-H
  EXPECT_EQ(slurm_time_seconds("0-1:30", "t"), 3600 + 30 * 60);  // D-H:M
  for (const char* bad : {"", "x", "1:2:3:4", "1-", "-1", "1:-2", "1.5"})
    EXPECT_THROW(slurm_time_seconds(bad, "t"), UsageError) << bad;
}

TEST(Cluster, HostLists) {
  const auto hosts = parse_host_list("a:8,b,c:2", "--hosts");
  ASSERT_EQ(hosts.size(), 3u);
  EXPECT_EQ(hosts[0].host, "a");
  EXPECT_EQ(hosts[0].slots, 8);
  EXPECT_EQ(hosts[1].slots, 1);
  EXPECT_EQ(hosts[2].slots, 2);
  for (const char* bad : {"a:0", "a:x", ":4", "a:8,,b:8"})
    EXPECT_THROW(parse_host_list(bad, "--hosts"), UsageError) << bad;
}

TEST(Cluster, ShellQuoting) {
  EXPECT_EQ(shell_quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
}

// The rank's GPU: the entry of CUDA_VISIBLE_DEVICES at its local rank.
TEST(Cluster, GpuFromLocalRank) {
  ::unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  ::unsetenv("MPI_LOCALRANKID");
  ::setenv("SPARTAN_GPU_PER_RANK", "1", 1);
  ::setenv("SLURM_LOCALID", "2", 1);
  ::setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7", 1);
  bind_gpu_to_local_rank();
  EXPECT_STREQ(std::getenv("CUDA_VISIBLE_DEVICES"), "6");

  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);  // Open MPI's variable comes first
  ::setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7", 1);
  bind_gpu_to_local_rank();
  EXPECT_STREQ(std::getenv("CUDA_VISIBLE_DEVICES"), "5");

  ::setenv("CUDA_VISIBLE_DEVICES", "0", 1);  // two local ranks, one GPU
  EXPECT_THROW(bind_gpu_to_local_rank(), Error);

  ::unsetenv("SPARTAN_GPU_PER_RANK");  // not asked for: left alone
  ::setenv("CUDA_VISIBLE_DEVICES", "0,1", 1);
  bind_gpu_to_local_rank();
  EXPECT_STREQ(std::getenv("CUDA_VISIBLE_DEVICES"), "0,1");
}

}  // namespace
}  // namespace spartan::launcher
