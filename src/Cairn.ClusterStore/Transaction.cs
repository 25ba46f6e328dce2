namespace Cairn.ClusterStore;

/// <summary>An etcd-style transaction: if all <see cref="Compares"/> hold, run <see cref="Success"/>, else <see cref="Failure"/>.</summary>
public sealed record Transaction(IReadOnlyList<Compare> Compares, IReadOnlyList<TxnOp> Success, IReadOnlyList<TxnOp> Failure)
{
    public static Transaction If(params Compare[] compares) => new(compares, [], []);

    public Transaction Then(params TxnOp[] ops) => this with { Success = ops };

    public Transaction Else(params TxnOp[] ops) => this with { Failure = ops };
}

public enum CompareTarget
{
    /// <summary>The key's last-write revision; 0 when the key does not exist.</summary>
    ModRevision,
    /// <summary>The key's creation revision; 0 when the key does not exist.</summary>
    CreateRevision,
    /// <summary>Writes since creation; 0 when the key does not exist.</summary>
    Version,
}

public enum CompareOp
{
    Equal,
    NotEqual,
    Less,
    Greater,
}

public sealed record Compare(string Key, CompareTarget Target, CompareOp Op, long Value)
{
    /// <summary>Holds when the key was last written at <paramref name="revision"/>, i.e. nobody changed it since it was read.</summary>
    public static Compare ModRevisionIs(string key, long revision) => new(key, CompareTarget.ModRevision, CompareOp.Equal, revision);

    public static Compare Exists(string key) => new(key, CompareTarget.CreateRevision, CompareOp.NotEqual, 0);

    public static Compare Missing(string key) => new(key, CompareTarget.CreateRevision, CompareOp.Equal, 0);

    internal bool Holds(KeyValue? current)
    {
        long actual = current is null ? 0 : Target switch
        {
            CompareTarget.ModRevision => current.ModRevision,
            CompareTarget.CreateRevision => current.CreateRevision,
            CompareTarget.Version => current.Version,
            _ => throw new InvalidOperationException($"unknown compare target {Target}"),
        };
        return Op switch
        {
            CompareOp.Equal => actual == Value,
            CompareOp.NotEqual => actual != Value,
            CompareOp.Less => actual < Value,
            CompareOp.Greater => actual > Value,
            _ => throw new InvalidOperationException($"unknown compare op {Op}"),
        };
    }
}

public abstract record TxnOp
{
    public static TxnOp Put(string key, ReadOnlyMemory<byte> value, long leaseId = 0) => new PutOp(key, value.ToArray(), leaseId);

    public static TxnOp Delete(string key) => new DeleteOp(key);
}

public sealed record PutOp(string Key, byte[] Value, long LeaseId) : TxnOp;

public sealed record DeleteOp(string Key) : TxnOp;

/// <param name="Succeeded">Whether the compares held (and the success branch ran).</param>
/// <param name="Revision">The store revision after the transaction.</param>
public sealed record TransactionResult(bool Succeeded, long Revision);
