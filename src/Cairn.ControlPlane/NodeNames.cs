using System.Diagnostics.CodeAnalysis;

namespace Cairn.ControlPlane;

/// <summary>Node names (and zone and rack names) follow the volume-name rules: they appear in keys, URLs and tables.</summary>
public static class NodeNames
{
    public static bool TryValidate([NotNullWhen(true)] string? name, out string error) => VolumeNames.TryValidate(name, "node name", out error);

    public static void Validate([NotNull] string? name)
    {
        if (!TryValidate(name, out var error))
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, error, "name");
        }
    }
}
