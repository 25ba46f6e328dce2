using Cairn.ClusterStore;
using Cairn.Core;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

// Who may log in to a volume over iSCSI. The policy lives in the volume's spec in the cluster store, secrets included
// (the store is the system of record; protect access to it), and is read by the iSCSI target at every login.
public sealed partial class VolumeService
{
    /// <summary>Replaces the volume's iSCSI access policy; <see cref="IscsiAccess.Open"/> lets anyone in without authentication.</summary>
    public async Task<VolumeInfo> SetIscsiAccessAsync(string? name, IscsiAccess access, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(name);
        if (access.Validate() is { } problem)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, problem.Reason, problem.Field);
        }
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var state = Find(name) ?? throw NotFound(name);
            if (state.Replicated is not null)
            {
                await RefreshOwnedSpecAsync(state, cancellationToken); // its replica set changes under it; start from the stored revision
            }
            var spec = state.Spec with { IscsiAccess = access.IsOpen ? null : access };
            var result = await _store.CommitAsync(
                Transaction.If(Compare.ModRevisionIs(KeyOf(name), state.ModRevision)).Then(TxnOp.Put(KeyOf(name), Serialize(spec))), cancellationToken);
            if (!result.Succeeded)
            {
                throw ChangedConcurrently(name);
            }
            state.Spec = spec;
            state.ModRevision = result.Revision;
            // Names and user names only: secrets never reach a log.
            _logger.LogInformation("volume {Volume} iSCSI access: initiators {Initiators}; {Chap}; mutual {Mutual}", name,
                access.AllowedInitiators.Count == 0 ? "any" : string.Join(", ", access.AllowedInitiators),
                access.Chap?.ToString() ?? "no CHAP", access.MutualChap?.ToString() ?? "none");
            return Describe(state);
        }
        finally
        {
            _mutations.Release();
        }
    }
}
