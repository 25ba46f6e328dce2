using System.Text.Json;
using Cairn.ClusterStore.Etcd;

namespace Cairn.ClusterStore;

// Leases: etcd grants whole-second TTLs (raising short ones to its minimum, about 1.5 x the election timeout)
// and deletes the keys of a lease that is not kept alive. Keep-alive is a streaming endpoint on the gateway;
// one request line gets one answer line, which is all a single keep-alive needs.
public sealed partial class EtcdClusterStore
{
    public async ValueTask<Lease> GrantLeaseAsync(TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        long seconds = Math.Max(1, (long)Math.Ceiling(ttl.TotalSeconds));
        // Retrying a grant whose answer was lost can only leave an unused lease behind, which expires by itself.
        var response = await PostAsync("/v3/lease/grant", new LeaseGrantRequest { Ttl = seconds },
            EtcdJsonContext.Default.LeaseGrantRequest, EtcdJsonContext.Default.LeaseGrantResponse, idempotent: true, cancellationToken);
        Observe(response.Header);
        if (!string.IsNullOrEmpty(response.Error) || response.Id == 0)
        {
            throw new InvalidOperationException($"etcd did not grant a lease: {response.Error}");
        }
        var granted = TimeSpan.FromSeconds(response.Ttl);
        return new Lease(response.Id, granted, DateTimeOffset.UtcNow + granted);
    }

    public async ValueTask<Lease> KeepAliveAsync(long leaseId, CancellationToken cancellationToken = default)
    {
        var line = await PostAsync("/v3/lease/keepalive", new LeaseIdRequest { Id = leaseId },
            EtcdJsonContext.Default.LeaseIdRequest, EtcdJsonContext.Default.LeaseKeepAliveLine, idempotent: true, cancellationToken);
        if (line.Error is { } error)
        {
            throw new InvalidOperationException($"etcd refused to keep lease {leaseId} alive: {error.Message} (gRPC code {error.GrpcCode})");
        }
        var result = line.Result ?? throw new JsonException("etcd's keep-alive answer had no result");
        Observe(result.Header);
        if (result.Ttl <= 0)
        {
            throw new LeaseNotFoundException(leaseId); // etcd answers an expired or unknown lease with TTL 0
        }
        var ttl = TimeSpan.FromSeconds(result.Ttl);
        return new Lease(leaseId, ttl, DateTimeOffset.UtcNow + ttl);
    }

    public async ValueTask<bool> RevokeLeaseAsync(long leaseId, CancellationToken cancellationToken = default)
    {
        try
        {
            var response = await PostAsync("/v3/lease/revoke", new LeaseIdRequest { Id = leaseId },
                EtcdJsonContext.Default.LeaseIdRequest, EtcdJsonContext.Default.LeaseRevokeResponse, idempotent: true, cancellationToken);
            Observe(response.Header);
            return true;
        }
        catch (EtcdErrorException e) when (e.IsLeaseNotFound)
        {
            return false;
        }
    }
}
