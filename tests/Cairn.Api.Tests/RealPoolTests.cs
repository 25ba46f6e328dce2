using System.Net;
using System.Net.Http.Json;

namespace Cairn.Api.Tests;

/// <summary>The same API over the real block store (the daemon's default pool under DATA/pools/default).</summary>
public sealed class RealPoolTests
{
    [Fact]
    public async Task Create_write_grow_restart_and_delete_on_a_real_pool()
    {
        var d = await DaemonFixture.StartAsync(realPools: true);
        try
        {
            Assert.Equal(HttpStatusCode.Created, (await d.CreateAsync("real", "64MiB")).StatusCode);
            Assert.True(Directory.Exists(Path.Combine(d.DataDir, "pools", "default")));
            using (var session = d.Daemon.Volumes.TryOpen("real", "test")!)
            {
                await session.Device.WriteAsync(0, new byte[8192], Cairn.Core.WriteFlags.ForceUnitAccess);
            }
            var volume = await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/real"));
            Assert.Equal(8192, volume.GetProperty("allocatedBytes").GetInt64());
            var pool = (await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/pools"))).GetProperty("pools")[0];
            Assert.Equal("default", pool.GetProperty("name").GetString());
            Assert.Equal(8192, pool.GetProperty("usedBytes").GetInt64());
            Assert.Equal(HttpStatusCode.OK, (await d.Http.PatchAsJsonAsync("/api/v1/volumes/real", new { size = "128MiB" })).StatusCode);

            d = await d.RestartAsync();

            volume = await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/real"));
            Assert.Equal((128L << 20, 8192L), (volume.GetProperty("sizeBytes").GetInt64(), volume.GetProperty("allocatedBytes").GetInt64()));
            Assert.Equal(HttpStatusCode.NoContent, (await d.Http.DeleteAsync("/api/v1/volumes/real")).StatusCode);
            pool = (await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/pools"))).GetProperty("pools")[0];
            Assert.Equal(0, pool.GetProperty("volumes").GetInt32());
        }
        finally
        {
            await d.DisposeAsync();
        }
    }
}
