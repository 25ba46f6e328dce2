using Cairn.Core.Transport;

namespace Cairn.Core.Tests;

public sealed class IoThreadsTests
{
    [Fact]
    public void The_count_is_fixed_once_the_threads_run_and_a_bad_count_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => IoThreads.Configure(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => IoThreads.Configure(1025));
        IoThreads.Configure(0);
        var group = IoThreads.Group;
        Assert.Same(group, IoThreads.Group); // one group for the whole process
        IoThreads.Configure(0); // the count in use is accepted again
        var refused = Assert.Throws<InvalidOperationException>(() => IoThreads.Configure(3));
        Assert.Contains("before the first connection", refused.Message, StringComparison.Ordinal);
    }
}
