using System.Diagnostics.CodeAnalysis;
using Cairn.BlockStore;

namespace Cairn.ControlPlane;

/// <summary>
/// The slice of <see cref="BlockPool"/> the control plane uses. A seam so the control plane, API and
/// CLI tests can run on an in-memory pool, and so a later remote (replica-service) pool can plug in.
/// </summary>
public interface IVolumePool : IDisposable
{
    string Name { get; }
    string Directory { get; }
    long CapacityBytes { get; }
    long UsedBytes { get; }
    long FreeBytes { get; }

    IReadOnlyList<StoredVolumeInfo> ListVolumes();

    StoredVolume CreateVolume(string volumeId, long sizeBytes);

    bool TryGetVolume(string volumeId, [NotNullWhen(true)] out StoredVolume? volume);

    void DeleteVolume(string volumeId);
}

/// <summary>A local block-store pool.</summary>
public sealed class LocalVolumePool(BlockPool pool) : IVolumePool
{
    public string Name => pool.Name;
    public string Directory => pool.Directory;
    public long CapacityBytes => pool.CapacityBytes;
    public long UsedBytes => pool.UsedBytes;
    public long FreeBytes => pool.FreeBytes;

    public IReadOnlyList<StoredVolumeInfo> ListVolumes() => pool.ListVolumes();

    public StoredVolume CreateVolume(string volumeId, long sizeBytes) => pool.CreateVolume(volumeId, sizeBytes);

    public bool TryGetVolume(string volumeId, [NotNullWhen(true)] out StoredVolume? volume) =>
        pool.TryGetVolume(volumeId, out volume) && volume is not null;

    public void DeleteVolume(string volumeId) => pool.DeleteVolume(volumeId);

    public void Dispose() => pool.Dispose();
}
