using System.Threading.Tasks.Sources;

namespace Cairn.Replication;

public sealed partial class ReplicaLink
{
    /// <summary>
    /// One in-flight request: armed when sent, written by the link's <see cref="FrameSender"/> (it is its own frame),
    /// completed by its reply, and freed when its sender reads the result (it is its own awaitable).
    /// </summary>
    private sealed class Slot(ReplicaLink link, int index) : IValueTaskSource<ReplicaStatus>, IOutgoingFrame
    {
        public int Index { get; } = index;

        private readonly Lock _lock = new();
        private ManualResetValueTaskSourceCore<ReplicaStatus> _core = new() { RunContinuationsAsynchronously = false };
        private ReplicaRequest _request;
        private bool _armed;

        public Memory<byte> ReadInto { get; private set; }

        public ReadOnlyMemory<byte> Body { get; private set; }

        public short Version => _core.Version;

        public void Arm(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto)
        {
            lock (_lock)
            {
                _request = request;
                Body = payload;
                ReadInto = readInto;
                _armed = true;
            }
        }

        public bool Matches(long sequence)
        {
            lock (_lock)
            {
                return _armed && _request.Sequence == (ulong)sequence;
            }
        }

        public int WriteHead(Span<byte> destination)
        {
            _request.Encode(destination);
            return ReplicaProtocol.RequestHeaderSize;
        }

        /// <summary>The payload belongs to the caller, who keeps it until the reply: nothing to give back here.</summary>
        public void Sent()
        {
        }

        public void Complete(ReplicaStatus status, Exception? error)
        {
            lock (_lock)
            {
                if (!_armed)
                {
                    return;
                }
                _armed = false;
                ReadInto = default;
                Body = default;
            }
            if (error is null)
            {
                _core.SetResult(status);
            }
            else
            {
                _core.SetException(error);
            }
        }

        public void FailIfArmed(Exception error) => Complete(default, error);

        public ReplicaStatus GetResult(short token)
        {
            try
            {
                return _core.GetResult(token);
            }
            finally
            {
                _core.Reset();
                link.Release(Index);
            }
        }

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
