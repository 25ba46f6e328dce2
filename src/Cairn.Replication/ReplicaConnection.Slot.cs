using System.Buffers;
using System.Runtime.CompilerServices;

namespace Cairn.Replication;

internal sealed partial class ReplicaConnection
{
    /// <summary>
    /// One request from the moment the receive loop takes it until its reply is on the wire: its header, its payload or
    /// read buffer, and the continuation that answers it. The slot is its own reply frame and its own thread-pool work
    /// item, and keeps its buffer for the next request, so a request allocates nothing once the connection is warm.
    /// </summary>
    private sealed class RequestSlot : IOutgoingFrame, IThreadPoolWorkItem
    {
        /// <summary>A slot keeps a buffer up to this size for its next requests; larger ones are rented per request.</summary>
        private const int KeptBufferMaxBytes = 128 * 1024;

        private readonly ReplicaConnection _connection;
        private readonly int _index;
        private readonly Action _onDeviceCompleted;
        private ReplicaRequest _request;
        private ReplicaStatus _status;
        private byte[]? _kept;
        private byte[]? _rented;
        private AlignedPayloads.Buffer? _aligned;
        private Memory<byte> _data;
        private ConfiguredValueTaskAwaitable<ReplicaStatus>.ConfiguredValueTaskAwaiter _pending;
        private volatile bool _executing;

        public RequestSlot(ReplicaConnection connection, int index)
        {
            _connection = connection;
            _index = index;
            _onDeviceCompleted = OnDeviceCompleted;
        }

        /// <summary>From <see cref="Prepare"/> until the device call returned: what later requests may have to wait for.</summary>
        public bool Executing => _executing;

        /// <summary>Ops that touch one range of the volume and nothing else: ordered against overlapping requests only.</summary>
        public static bool HasRange(ReplicaOp op) =>
            op is ReplicaOp.Read or ReplicaOp.Verify or ReplicaOp.ReadSnapshotBlock or ReplicaOp.VerifySnapshot or ReplicaOp.RewriteSnapshotBlock
                or ReplicaOp.Write or ReplicaOp.Trim or ReplicaOp.WriteZeroes;

        /// <summary>Ops that only read their range: a verify reads it like a read (through the device, which checks each
        /// block's checksum), so it waits for an overlapping change, and an overlapping change waits for it. A snapshot
        /// block read is ordered like a read too: a snapshot never changes, but the barriers (snapshot create, delete,
        /// revert) must not overtake it nor it them, and waiting for an overlapping write costs a rare repair nothing. So
        /// is a snapshot verify. A snapshot block rewrite is ordered like a write (a rare repair: the strictest order).</summary>
        private static bool ReadsOnly(ReplicaOp op) => op is ReplicaOp.Read or ReplicaOp.Verify or ReplicaOp.ReadSnapshotBlock or ReplicaOp.VerifySnapshot;

        /// <summary>Whether <paramref name="other"/> must wait for this executing request: it overlaps it and one of them
        /// changes data, or this one is a barrier (grow, snapshots, delete-all, revert).</summary>
        public bool Conflicts(in ReplicaRequest other) => HasRange(_request.Op)
            ? (!ReadsOnly(_request.Op) || !ReadsOnly(other.Op))
                && other.Offset < _request.Offset + _request.RangeBytes && _request.Offset < other.Offset + other.RangeBytes
            : _request.Op != ReplicaOp.Flush;

        /// <summary>Takes <paramref name="request"/>; returns where its payload goes (writes, snapshot names) or its data will
        /// (reads; a verify's scratch, the range and then its bitmap; a snapshot block read's name, then its block).</summary>
        public Memory<byte> Prepare(in ReplicaRequest request)
        {
            _request = request;
            int bytes = BufferBytes(request);
            _data = bytes == 0 ? default : Buffer(bytes);
            _executing = true;
            return _data;
        }

        /// <summary>The payload never fully arrived (the owner went away): the request is dropped unexecuted.</summary>
        public void Abandon()
        {
            _executing = false;
            Sent();
        }

        /// <summary>
        /// Runs the request: here, or on the thread pool when it would block the receive loop (an IO thread every
        /// connection of the process shares) on the disk: FLUSH and FUA wait for the disk's cache; an uncached write (a
        /// rebuild's copy) waits for the disk itself, past the page cache, and a rebuild's requests in flight then reach
        /// the disk together; grow and the snapshot ops are synchronous metadata changes that sync; a verify is a scrub's
        /// cold read of up to 256 KiB, and of each block on its own when one fails, whose latency nobody waits on; so is
        /// a snapshot block read, a repair's.
        /// </summary>
        public void Start()
        {
            var op = _request.Op;
            bool blocks = op is ReplicaOp.Flush or ReplicaOp.Verify or ReplicaOp.ReadSnapshotBlock or ReplicaOp.VerifySnapshot or ReplicaOp.RewriteSnapshotBlock
                || !HasRange(op)
                || (_request.Flags & (ReplicaFlags.ForceUnitAccess | ReplicaFlags.Uncached)) != 0;
            if (blocks)
            {
                ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            }
            else
            {
                Run();
            }
        }

        void IThreadPoolWorkItem.Execute() => Run();

        private void Run()
        {
            ValueTask<ReplicaStatus> call;
            try
            {
                call = _connection._target!.ExecuteAsync(_request, _data, _data, _connection._abort.Token);
            }
            catch (Exception e)
            {
                Complete(_connection.StatusOf(e));
                return;
            }
            if (call.IsCompleted)
            {
                Complete(Result(call.ConfigureAwait(false).GetAwaiter()));
                return;
            }
            _pending = call.ConfigureAwait(false).GetAwaiter();
            _pending.UnsafeOnCompleted(_onDeviceCompleted);
        }

        private void OnDeviceCompleted()
        {
            var pending = _pending;
            _pending = default;
            Complete(Result(pending));
        }

        private ReplicaStatus Result(ConfiguredValueTaskAwaitable<ReplicaStatus>.ConfiguredValueTaskAwaiter call)
        {
            try
            {
                return call.GetResult();
            }
            catch (Exception e)
            {
                return _connection.StatusOf(e);
            }
        }

        private void Complete(ReplicaStatus status)
        {
            _status = status;
            _executing = false;
            _connection._changed.Set(); // a request waiting for this one to finish may go
            _connection._sender.Enqueue(this);
        }

        public int WriteHead(Span<byte> destination)
        {
            new ReplicaReply(_status, _request.Sequence).Encode(destination);
            return ReplicaProtocol.ReplyHeaderSize;
        }

        public ReadOnlyMemory<byte> Body => _status == ReplicaStatus.Ok ? _data[..ReplicaProtocol.ReplyPayloadBytes(_request.Op, _request.Length)] : default;

        public void Sent()
        {
            if (_rented is not null)
            {
                ArrayPool<byte>.Shared.Return(_rented);
                _rented = null;
            }
            if (_aligned is not null)
            {
                AlignedPayloads.Return(_aligned);
                _aligned = null;
            }
            _data = default;
            _connection.Release(_index);
        }

        /// <summary>The buffer <paramref name="request"/> needs: its payload, a read's data, or a verify's scratch; a
        /// snapshot block read's name, then (read over it) its block.</summary>
        private static int BufferBytes(in ReplicaRequest request) => request.Op switch
        {
            ReplicaOp.Verify => Math.Max((int)request.Length, ReplicaProtocol.VerifyReplyBytes),
            ReplicaOp.ReadSnapshotBlock => Math.Max((int)request.Length, ReplicaProtocol.SnapshotBlockBytes),
            ReplicaOp.VerifySnapshot => Math.Max((int)request.Length, ReplicaProtocol.MaxVerifyBytes),
            ReplicaOp.Read => (int)request.Length,
            _ => request.CarriesPayload ? (int)request.Length : 0,
        };

        /// <summary>A buffer of <paramref name="bytes"/>: a large one (a rebuild's 1 MiB copy) 4 KiB-aligned where one is spare,
        /// so the replica's O_DIRECT write goes straight from it (see <see cref="AlignedPayloads"/>).</summary>
        private Memory<byte> Buffer(int bytes)
        {
            if (bytes > KeptBufferMaxBytes && bytes <= AlignedPayloads.BufferBytes && AlignedPayloads.TryRent() is { } aligned)
            {
                _aligned = aligned;
                return aligned.Memory(bytes);
            }
            if (bytes > KeptBufferMaxBytes)
            {
                _rented = ArrayPool<byte>.Shared.Rent(bytes);
                return _rented.AsMemory(0, bytes);
            }
            if (_kept is null || _kept.Length < bytes)
            {
                _kept = new byte[Math.Max(4096, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)bytes))];
            }
            return _kept.AsMemory(0, bytes);
        }
    }
}
