using System.Text.Json.Serialization;

namespace Cairn.ClusterStore.Etcd;

// The subset of etcd 3.4's v3 JSON gateway (grpc-gateway over etcdserverpb) that the store uses.
// Gateway conventions: bytes are base64 (System.Text.Json's byte[] format), int64 travels as a JSON string,
// and proto3 leaves out zero/false/empty fields, so every response field defaults to zero when absent.
// Optional request fields are nullable so that only the ones we set are sent (a compare's target is a oneof).

internal sealed class EtcdHeader
{
    public long Revision { get; set; }
}

internal sealed class EtcdKv
{
    public byte[]? Key { get; set; }
    public long CreateRevision { get; set; }
    public long ModRevision { get; set; }
    public long Version { get; set; }
    public byte[]? Value { get; set; }
    public long Lease { get; set; }
}

internal sealed class RangeRequest
{
    public byte[]? Key { get; set; }
    public byte[]? RangeEnd { get; set; }
}

internal sealed class RangeResponse
{
    public EtcdHeader? Header { get; set; }
    public List<EtcdKv>? Kvs { get; set; }
}

internal sealed class PutRequest
{
    public byte[]? Key { get; set; }
    public byte[]? Value { get; set; }
    public long? Lease { get; set; }
}

internal sealed class PutResponse
{
    public EtcdHeader? Header { get; set; }
}

internal sealed class DeleteRangeRequest
{
    public byte[]? Key { get; set; }
    public byte[]? RangeEnd { get; set; }
}

internal sealed class DeleteRangeResponse
{
    public EtcdHeader? Header { get; set; }
    public long Deleted { get; set; }
}

internal sealed class EtcdCompare
{
    public byte[]? Key { get; set; }
    /// <summary>VERSION, CREATE, MOD or VALUE.</summary>
    public string? Target { get; set; }
    /// <summary>EQUAL, GREATER, LESS or NOT_EQUAL.</summary>
    public string? Result { get; set; }
    public long? Version { get; set; }
    public long? CreateRevision { get; set; }
    public long? ModRevision { get; set; }
}

internal sealed class EtcdRequestOp
{
    public PutRequest? RequestPut { get; set; }
    public DeleteRangeRequest? RequestDeleteRange { get; set; }
}

internal sealed class TxnRequest
{
    public List<EtcdCompare>? Compare { get; set; }
    public List<EtcdRequestOp>? Success { get; set; }
    public List<EtcdRequestOp>? Failure { get; set; }
}

internal sealed class TxnResponse
{
    public EtcdHeader? Header { get; set; }
    public bool Succeeded { get; set; }
}

internal sealed class CompactionRequest
{
    public long Revision { get; set; }
    public bool? Physical { get; set; }
}

internal sealed class CompactionResponse
{
    public EtcdHeader? Header { get; set; }
}

internal sealed class LeaseGrantRequest
{
    [JsonPropertyName("TTL")]
    public long Ttl { get; set; }
}

internal sealed class LeaseGrantResponse
{
    public EtcdHeader? Header { get; set; }
    [JsonPropertyName("ID")]
    public long Id { get; set; }
    [JsonPropertyName("TTL")]
    public long Ttl { get; set; }
    public string? Error { get; set; }
}

internal sealed class LeaseIdRequest
{
    [JsonPropertyName("ID")]
    public long Id { get; set; }
}

internal sealed class LeaseKeepAliveResponse
{
    public EtcdHeader? Header { get; set; }
    [JsonPropertyName("ID")]
    public long Id { get; set; }
    [JsonPropertyName("TTL")]
    public long Ttl { get; set; }
}

/// <summary>A streaming endpoint's line: <c>{"result":{...}}</c> or <c>{"error":{...}}</c>.</summary>
internal sealed class LeaseKeepAliveLine
{
    public LeaseKeepAliveResponse? Result { get; set; }
    public EtcdStreamError? Error { get; set; }
}

internal sealed class LeaseRevokeResponse
{
    public EtcdHeader? Header { get; set; }
}

internal sealed class WatchCreateRequest
{
    public byte[]? Key { get; set; }
    public byte[]? RangeEnd { get; set; }
    public long? StartRevision { get; set; }
    public bool? ProgressNotify { get; set; }
    public bool? PrevKv { get; set; }
}

internal sealed class WatchRequest
{
    public WatchCreateRequest? CreateRequest { get; set; }
}

internal sealed class EtcdEvent
{
    /// <summary>Absent for PUT (the enum's zero value), "DELETE" for deletes.</summary>
    public string? Type { get; set; }
    public EtcdKv? Kv { get; set; }
    public EtcdKv? PrevKv { get; set; }
}

internal sealed class WatchResponse
{
    public EtcdHeader? Header { get; set; }
    public bool Created { get; set; }
    public bool Canceled { get; set; }
    public long CompactRevision { get; set; }
    public string? CancelReason { get; set; }
    public List<EtcdEvent>? Events { get; set; }
}

internal sealed class WatchLine
{
    public WatchResponse? Result { get; set; }
    public EtcdStreamError? Error { get; set; }
}

internal sealed class EtcdStreamError
{
    public int GrpcCode { get; set; }
    public int HttpCode { get; set; }
    public string? Message { get; set; }
}

/// <summary>A unary call's error body: <c>{"error":"...","message":"...","code":5}</c> (code is the gRPC status code).</summary>
internal sealed class EtcdErrorBody
{
    public string? Error { get; set; }
    public string? Message { get; set; }
    public int Code { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    NumberHandling = JsonNumberHandling.AllowReadingFromString | JsonNumberHandling.WriteAsString,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RangeRequest))]
[JsonSerializable(typeof(RangeResponse))]
[JsonSerializable(typeof(PutRequest))]
[JsonSerializable(typeof(PutResponse))]
[JsonSerializable(typeof(DeleteRangeRequest))]
[JsonSerializable(typeof(DeleteRangeResponse))]
[JsonSerializable(typeof(TxnRequest))]
[JsonSerializable(typeof(TxnResponse))]
[JsonSerializable(typeof(CompactionRequest))]
[JsonSerializable(typeof(CompactionResponse))]
[JsonSerializable(typeof(LeaseGrantRequest))]
[JsonSerializable(typeof(LeaseGrantResponse))]
[JsonSerializable(typeof(LeaseIdRequest))]
[JsonSerializable(typeof(LeaseKeepAliveLine))]
[JsonSerializable(typeof(LeaseRevokeResponse))]
[JsonSerializable(typeof(WatchRequest))]
[JsonSerializable(typeof(WatchLine))]
[JsonSerializable(typeof(EtcdErrorBody))]
internal sealed partial class EtcdJsonContext : JsonSerializerContext;
