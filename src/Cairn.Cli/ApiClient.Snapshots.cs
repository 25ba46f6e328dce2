using System.Net.Http.Json;

namespace Cairn.Cli;

internal sealed partial class ApiClient
{
    public Task<Reply<SnapshotListDto>> ListSnapshotsAsync(string volume, CancellationToken ct) =>
        SendAsync(HttpMethod.Get, VolumePath(volume) + "/snapshots", null, CliJson.Default.SnapshotListDto, ct);

    public Task<Reply<SnapshotDto>> CreateSnapshotAsync(string volume, string name, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, VolumePath(volume) + "/snapshots", JsonContent.Create(new CreateSnapshotDto(name), CliJson.Default.CreateSnapshotDto), CliJson.Default.SnapshotDto, ct);

    public async Task DeleteSnapshotAsync(string volume, string name, bool force, CancellationToken ct)
    {
        using var response = await SendRawAsync(HttpMethod.Delete, SnapshotPath(volume, name) + (force ? "?force=true" : ""), null, ct);
    }

    public Task<Reply<VolumeDto>> CloneVolumeAsync(string name, string sourceVolume, string sourceSnapshot, string? size, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, "api/v1/volumes", JsonContent.Create(new CloneVolumeDto(name, size, new SourceDto(sourceVolume, sourceSnapshot)), CliJson.Default.CloneVolumeDto),
            CliJson.Default.VolumeDto, ct);

    public Task<Reply<VolumeDto>> RevertVolumeAsync(string volume, string snapshot, bool force, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, VolumePath(volume) + "/revert", JsonContent.Create(new RevertVolumeDto(snapshot, force), CliJson.Default.RevertVolumeDto), CliJson.Default.VolumeDto, ct);

    public Task<Reply<ScrubDto>> StartScrubAsync(string volume, string? rate, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, VolumePath(volume) + "/scrub", JsonContent.Create(new StartScrubDto(rate), CliJson.Default.StartScrubDto), CliJson.Default.ScrubDto, ct);

    public Task<Reply<ScrubDto>> GetScrubAsync(string volume, CancellationToken ct) =>
        SendAsync(HttpMethod.Get, VolumePath(volume) + "/scrub", null, CliJson.Default.ScrubDto, ct);

    private static string SnapshotPath(string volume, string name) => VolumePath(volume) + "/snapshots/" + Uri.EscapeDataString(name);
}
